"""The shroud/1 channel core: handshake, key schedule, records and streams, without I/O.

Specified in docs/protocol.md. Modules, one concept each:

- ``connection``: ``ClientConnection`` / ``BridgeConnection``, the sans-I/O state machines
  (bytes in, events and bytes out) that the SDK clients and the bridge wrap.
- ``handshake``: ClientHello / BridgeHello encodings, REPORTDATA and the transcript hash.
- ``evidence``: the evidence encoding and the provider / verifier callback protocols.
- ``keyschedule``: HKDF-Extract and the labelled expands into keys, IVs, fin and exporter.
- ``records``: AEAD records (header, AAD, nonce, padding, per-direction limits).
- ``streams``: the per-stream transition table and the stream-id rules.
- ``usage``: signing and verifying token usage carried in END metadata.
- ``fields``: validation of HTTP fields, disclosure maps and RESET/CLOSE contents.
- ``cbor``: deterministic encoding and the strict decoder.
- ``events``, ``constants``: event dataclasses and every spec constant.

Nothing here opens sockets, starts tasks or reads clocks.
"""
