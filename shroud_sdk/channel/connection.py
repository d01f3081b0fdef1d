"""The shroud/1 connection state machines: ``ClientConnection`` and ``BridgeConnection``.

Sans-I/O in the ``websockets`` style: the I/O shell feeds each received WebSocket binary
message to ``receive_data``, calls ``receive_eof`` when the socket ends, sends every item of
``data_to_send()`` as one binary message, and reads ``events_received()``. Requests and
responses are opened, fed, ended and reset with methods. No sockets, threads or clocks here.

Failure semantics (protocol.md §9): the first fatal ``ChannelError`` puts the connection in
the FAILED state, drops its keys and pending output, and every later call raises
``ConnectionFailedError``. The client refuses to send any request before the handshake (evidence
verified, REPORTDATA compared, ``fin`` checked) has succeeded.
"""

from __future__ import annotations

import enum
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec, mlkem
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shroud_sdk.channel import cbor, fields
from shroud_sdk.channel.constants import (
    CLOSE_NORMAL,
    CONNECTION_STREAM_ID,
    DEFAULT_CLIENT_SUITES,
    DIRECTION_B2C,
    DIRECTION_C2B,
    DISCLOSABLE_FIELDS,
    HYBRID_SUITES,
    IMPLEMENTED_SUITES,
    MAX_AUDIENCE_LEN,
    MAX_CONCURRENT_STREAMS,
    MAX_CONTENT_LEN,
    MAX_METADATA_LEN,
    NONCE_LEN,
    PROTOCOL_VERSION,
    REPORT_DATA_LEN,
    SIGNATURE_LEN,
    SIMULATED_SUITES,
    RecordType,
    describe_suites,
)
from shroud_sdk.channel.events import (
    ConnectionClosed,
    DataReceived,
    Event,
    HandshakeComplete,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from shroud_sdk.channel.evidence import (
    Evidence,
    EvidenceMode,
    EvidenceProvider,
    EvidenceVerifier,
    KeyEvidence,
    KeyEvidenceProvider,
)
from shroud_sdk.channel.fields import Headers
from shroud_sdk.channel.handshake import (
    BridgeHelloCore,
    ClientHello,
    compute_key_report_data,
    compute_report_data,
    compute_transcript_hash,
    decode_bridge_hello,
    encode_bridge_hello,
    load_mlkem_key,
    load_p256_point,
    transcript_signature_input,
    verify_transcript_signature,
)
from shroud_sdk.channel.keyschedule import (
    SessionKeys,
    derive_session_keys,
    export_keying_material,
    finished_mac,
)
from shroud_sdk.channel.records import Limits, Record, RecordOpener, RecordSealer, padded_length
from shroud_sdk.channel.streams import HalfState, Stream, StreamTable, next_state
from shroud_sdk.channel.usage import SignedUsage, Usage, sign_usage, verify_usage
from shroud_sdk.errors import (
    ChannelError,
    ConnectionFailedError,
    HandshakeError,
    IntegrityError,
    LocalProtocolError,
    ProtocolError,
    RekeyRequiredError,
)


class ConnectionState(enum.Enum):
    """Connection lifecycle (protocol.md §6.5)."""

    HANDSHAKE = "handshake"  # hellos not yet exchanged and checked
    OPEN = "open"  # records flow both ways
    CLOSING = "closing"  # we sent CLOSE; still receiving until the peer's CLOSE
    CLOSED = "closed"  # peer's CLOSE received (and ours sent)
    FAILED = "failed"  # a fatal error happened; keys dropped


# Enum members read on every record sent: an Enum class attribute lookup runs Python code
# (the member descriptor), a module global does not.
_OPEN: Final = ConnectionState.OPEN
_HALF_OPEN: Final = HalfState.OPEN
_DATA: Final = RecordType.DATA
_RESET: Final = RecordType.RESET
_CLOSE: Final = RecordType.CLOSE
# Record types by their wire value: a dict lookup, not the Enum call (Python code per record).
_RECORD_TYPES: Final = {member.value: member for member in RecordType}


@dataclass(frozen=True)
class ClientConfig:
    """Client settings. ``allowed_suites`` defaults to the hybrid suite 2, then suite 1;
    simulated TEEs are refused unless their suites are named.

    ``fresh_quote`` asks for a quote over this handshake instead of the bridge's attested key
    (protocol.md §3.6); either way the bridge must answer in exactly the mode asked for.
    ``clock`` (UNIX seconds) judges an attested key's window; a parameter so tests can pin it.
    """

    audience: str
    verifier: EvidenceVerifier
    allowed_suites: frozenset[int] = DEFAULT_CLIENT_SUITES
    disclose: frozenset[str] = frozenset()
    limits: Limits = field(default_factory=Limits)
    max_concurrent_streams: int = MAX_CONCURRENT_STREAMS
    fresh_quote: bool = False
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_audience(self.audience)
        if not self.allowed_suites or not self.allowed_suites <= IMPLEMENTED_SUITES:
            raise ValueError(f"allowed_suites must be a non-empty subset of {IMPLEMENTED_SUITES}")
        if unknown := self.disclose - DISCLOSABLE_FIELDS.keys():
            raise ValueError(f"fields {sorted(unknown)} are not disclosable")


@dataclass(frozen=True)
class BridgeConfig:
    """Bridge settings: who we are (``audience``), how to get evidence, the usage key.

    ``evidence_provider`` serves fresh mode (a quote per handshake); ``key_evidence`` serves
    attested-key mode. A bridge without ``key_evidence`` refuses attested-key hellos.
    """

    audience: str
    evidence_provider: EvidenceProvider
    usage_signing_key: ec.EllipticCurvePrivateKey = field(repr=False)
    suites: frozenset[int] = DEFAULT_CLIENT_SUITES
    limits: Limits = field(default_factory=Limits)
    max_concurrent_streams: int = MAX_CONCURRENT_STREAMS
    key_evidence: KeyEvidenceProvider | None = None

    def __post_init__(self) -> None:
        _check_audience(self.audience)
        if not self.suites or not self.suites <= IMPLEMENTED_SUITES:
            raise ValueError(f"suites must be a non-empty subset of {IMPLEMENTED_SUITES}")
        if not isinstance(self.usage_signing_key.curve, ec.SECP256R1):
            raise ValueError("the usage-signing key must be ECDSA P-256")


class _Connection:
    """What both sides share: record processing, stream bookkeeping, failure and close."""

    _initiates_streams: bool  # True on the client: only it opens streams

    def __init__(self, limits: Limits, max_concurrent_streams: int) -> None:
        self._limits = limits
        self._state = ConnectionState.HANDSHAKE
        self._events: list[Event] = []
        self._outgoing: list[bytes] = []
        self._sealer: RecordSealer | None = None
        self._opener: RecordOpener | None = None
        self._exporter: bytes | None = None
        self._transcript_hash = b""
        self._streams = StreamTable(max_concurrent_streams)
        self._close_sent = False
        self._error: ChannelError | None = None

    # -- the sans-I/O contract ---------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The connection's lifecycle state."""
        return self._state

    @property
    def transcript_hash(self) -> bytes:
        """The session's transcript hash (empty before the handshake completes)."""
        return self._transcript_hash

    def receive_data(self, message: bytes) -> None:
        """Process one received WebSocket binary message (a hello or one record)."""
        self._check_not_failed()
        try:
            if self._state is ConnectionState.HANDSHAKE:
                self._receive_handshake(message)
            elif self._state is ConnectionState.CLOSED:
                raise ProtocolError("after-close", "record received after CLOSE")
            else:
                self._receive_record(message)
        except ChannelError as exc:
            if exc.fatal:
                self._fail(exc)
            raise
        except Exception as exc:  # fail closed on anything unforeseen, never half-process
            error = ProtocolError("unexpected", f"unexpected {type(exc).__name__}")
            self._fail(error)
            raise error from exc

    def receive_eof(self) -> None:
        """The transport ended. Anything but a completed CLOSE exchange is truncation."""
        if self._state in (ConnectionState.CLOSED, ConnectionState.FAILED):
            return
        error: ChannelError
        if self._state is ConnectionState.HANDSHAKE:
            error = HandshakeError("eof", "connection ended during the handshake")
        else:
            open_ids = sorted(self._streams.streams)
            error = IntegrityError(
                "truncation",
                f"connection ended without an authenticated CLOSE (open streams {open_ids})",
            )
        self._fail(error)
        raise error

    def events_received(self) -> list[Event]:
        """Return and clear the events produced since the last call."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        """Return and clear the messages to send, each as one WebSocket binary message."""
        out, self._outgoing = self._outgoing, []
        return out

    def has_data_to_send(self) -> bool:
        """Whether :meth:`data_to_send` has anything, so a shell can skip an empty flush."""
        return bool(self._outgoing)

    def owes_end(self, stream_id: int) -> bool:
        """True while this side has sent neither END nor RESET on a stream still in use.

        False once the stream is finished or reset by either side, and for an id never seen.
        """
        stream = self._streams.streams.get(stream_id)
        return stream is not None and stream.local is not HalfState.ENDED

    def close_expected(self) -> bool:
        """True when the shell should close the WebSocket after flushing ``data_to_send``."""
        return self._state in (ConnectionState.CLOSED, ConnectionState.FAILED)

    def export_keying_material(self, label: bytes, context: bytes, length: int) -> bytes:
        """Session-bound keying material for applications (protocol.md §5, "Exporter")."""
        self._check_not_failed()
        if self._exporter is None:
            raise LocalProtocolError("handshake", "handshake not complete")
        return export_keying_material(self._exporter, label, context, length)

    # -- sending on streams ------------------------------------------------------------------

    def send_data(self, stream_id: int, data: bytes) -> None:
        """Send body bytes, split into records of at most ``MAX_CONTENT_LEN`` bytes."""
        stream = self._streams.streams.get(stream_id)
        if (
            stream is not None
            and stream.local is _HALF_OPEN
            and self._state is _OPEN
            and 0 < len(data) <= MAX_CONTENT_LEN
        ):
            # The common case (a token or a few): one record on a stream open for sending.
            # The checks below, in line: a failed connection is not OPEN, a reset stream is
            # no longer in the table, DATA keeps the stream OPEN (nothing to update or
            # retire), and the sealer checks the limits before sealing anything.
            assert self._sealer is not None
            self._outgoing.append(self._sealer.seal(_DATA, stream_id, data))
            return
        stream = self._stream_for_send(stream_id)
        if len(data) <= MAX_CONTENT_LEN:
            chunks = [data] if data else []
        else:
            chunks = [data[i : i + MAX_CONTENT_LEN] for i in range(0, len(data), MAX_CONTENT_LEN)]
        next_state(stream.local, _DATA, LocalProtocolError, stream_id)
        self._require_room(chunks)
        for chunk in chunks:
            self._seal(_DATA, stream_id, chunk)

    def end_stream(self, stream_id: int) -> None:
        """Send END: this side's half of the stream is complete."""
        self._end_stream(stream_id, b"")

    def reset_stream(self, stream_id: int, code: int, reason: str = "") -> None:
        """Abandon a stream in both directions (RESET)."""
        stream = self._stream_for_send(stream_id)
        content = cbor.encode(
            {"code": fields.check_code(code), "reason": fields.check_reason(reason)}
        )
        self._seal(RecordType.RESET, stream_id, content)
        stream.reset = True
        self._streams.retire(stream, locally_reset=True)

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Send the authenticated CLOSE; nothing can be sent afterwards."""
        self._check_not_failed()
        if self._state is not ConnectionState.OPEN:
            raise LocalProtocolError("close", f"cannot close in state {self._state.value}")
        self._send_close(code, reason)

    # -- internals ---------------------------------------------------------------------------

    def _check_not_failed(self) -> None:
        if self._error is not None:
            raise ConnectionFailedError(self._error)

    def _fail(self, error: ChannelError) -> None:
        if self._error is None:
            self._error = error
        self._state = ConnectionState.FAILED
        # Never encrypt or decrypt again; whatever was queued is not sent either.
        self._sealer = self._opener = None
        self._exporter = None
        self._outgoing = []

    def _stream_for_send(self, stream_id: int) -> Stream:
        self._check_can_send()
        return self._streams.get_local(stream_id)

    def _check_can_send(self) -> None:
        self._check_not_failed()
        # Sending CLOSE leaves OPEN (for CLOSING or CLOSED), so this also stops sends after it.
        if self._state is not _OPEN:
            raise LocalProtocolError(
                "not-open", f"cannot send in state {self._state.value} (handshake or close)"
            )

    def _require_room(self, contents: list[bytes]) -> None:
        assert self._sealer is not None
        sizes = [padded_length(len(c)) for c in contents]
        if not self._sealer.has_room(len(sizes), sum(sizes)):
            raise RekeyRequiredError(
                "send-limit", "per-direction limit reached; new handshake needed"
            )

    def _seal(
        self, record_type: RecordType, stream_id: int, content: bytes, metadata: bytes = b""
    ) -> None:
        assert self._sealer is not None
        if record_type is not _CLOSE and record_type is not _RESET:
            stream = self._streams.streams[stream_id]
            new_local = next_state(stream.local, record_type, LocalProtocolError, stream_id)
            self._outgoing.append(self._sealer.seal(record_type, stream_id, content, metadata))
            stream.local = new_local
            if stream.done:
                self._streams.retire(stream)
            return
        self._outgoing.append(self._sealer.seal(record_type, stream_id, content, metadata))

    def _end_stream(self, stream_id: int, metadata: bytes) -> None:
        self._stream_for_send(stream_id)
        self._seal(RecordType.END, stream_id, b"", metadata)

    def _send_close(self, code: int, reason: str) -> None:
        assert self._sealer is not None
        content = cbor.encode(
            {"code": fields.check_code(code), "reason": fields.check_reason(reason)}
        )
        self._outgoing.append(self._sealer.seal(RecordType.CLOSE, CONNECTION_STREAM_ID, content))
        self._close_sent = True
        if self._state is ConnectionState.OPEN:
            self._state = ConnectionState.CLOSING

    def _start_records(self, keys: SessionKeys, transcript_hash: bytes, client: bool) -> None:
        c2b = (keys.c2b_key, keys.c2b_iv, DIRECTION_C2B)
        b2c = (keys.b2c_key, keys.b2c_iv, DIRECTION_B2C)
        send, recv = (c2b, b2c) if client else (b2c, c2b)
        self._sealer = RecordSealer(*send, self._limits)
        self._opener = RecordOpener(*recv, self._limits)
        self._exporter = keys.exporter_secret
        self._transcript_hash = transcript_hash
        self._state = ConnectionState.OPEN

    def _receive_handshake(self, message: bytes) -> None:
        raise NotImplementedError  # each side overrides

    def _receive_record(self, message: bytes) -> None:
        assert self._opener is not None
        record = self._opener.open(message)
        record_type = _RECORD_TYPES.get(record.type)
        if record_type is _DATA and record.content and not record.metadata:
            # The common case (a token or a few): DATA on a stream open for receiving. The
            # checks below, in line: no side may put metadata on DATA, DATA keeps the stream
            # OPEN (nothing to update or retire), and anything else takes the general path.
            open_stream = self._streams.streams.get(record.stream_id)
            if open_stream is not None and open_stream.remote is _HALF_OPEN:
                self._events.append(DataReceived(record.stream_id, record.content))
                return
        if record_type is None:
            raise ProtocolError("record-type", f"unknown record type {record.type}")
        if record_type is RecordType.CLOSE:
            self._receive_close(record)
            return
        if record.stream_id == CONNECTION_STREAM_ID:
            raise ProtocolError("stream-id", f"{record_type.name} on stream 0")
        self._check_metadata_allowed(record_type, record)
        if record_type is RecordType.HEADERS and not self._initiates_streams:
            stream: Stream | None = self._streams.open(record.stream_id, ProtocolError)
        else:
            stream = self._streams.get_remote(record.stream_id)
        if stream is None:  # we reset it; the peer had not seen that yet
            if record_type in (RecordType.END, RecordType.RESET):
                self._streams.forget_reset(record.stream_id)
            return
        if record_type is RecordType.RESET:
            code, reason = fields.parse_code_reason(record.content, "RESET")
            stream.reset = True
            self._streams.retire(stream)
            self._events.append(StreamReset(stream.stream_id, code, reason))
            return
        stream.remote = next_state(stream.remote, record_type, ProtocolError, stream.stream_id)
        if record_type is RecordType.HEADERS:
            self._events.append(self._parse_headers(record))
        elif record_type is RecordType.DATA:
            if not record.content:
                raise ProtocolError("empty-data", f"empty DATA on stream {record.stream_id}")
            self._events.append(DataReceived(record.stream_id, record.content))
        else:
            if record.content:
                raise ProtocolError("end-content", "END must have empty content")
            self._events.append(StreamEnded(record.stream_id, self._parse_end_metadata(record)))
        if stream.done:
            self._streams.retire(stream)

    def _receive_close(self, record: Record) -> None:
        if record.stream_id != CONNECTION_STREAM_ID or record.metadata:
            raise ProtocolError("close-format", "CLOSE must be on stream 0 without metadata")
        code, reason = fields.parse_code_reason(record.content, "CLOSE")
        unfinished = tuple(sorted(self._streams.streams))
        self._events.append(ConnectionClosed(code, reason, unfinished))
        if not self._close_sent:
            self._send_close(code, "")
        self._state = ConnectionState.CLOSED
        self._opener = None

    def _check_metadata_allowed(self, record_type: RecordType, record: Record) -> None:
        raise NotImplementedError

    def _parse_headers(self, record: Record) -> Event:
        raise NotImplementedError

    def _parse_end_metadata(self, record: Record) -> SignedUsage | None:
        raise NotImplementedError


class ClientConnection(_Connection):
    """The SDK side. Construction queues ClientHello; nothing else leaves before
    ``HandshakeComplete``."""

    _initiates_streams = True

    def __init__(self, config: ClientConfig) -> None:
        super().__init__(config.limits, config.max_concurrent_streams)
        self._config = config
        self._ephemeral: ec.EllipticCurvePrivateKey | None = ec.generate_private_key(ec.SECP256R1())
        # Preference: hybrid, then classic, then simulated (only ever offered if allowed).
        suites = tuple(
            sorted(
                config.allowed_suites,
                key=lambda s: (s in SIMULATED_SUITES, s not in HYBRID_SUITES, s),
            )
        )
        self._kem_key: mlkem.MLKEM768PrivateKey | None = None
        if config.allowed_suites & HYBRID_SUITES:
            self._kem_key = mlkem.MLKEM768PrivateKey.generate()
        self._hello = ClientHello(
            version=PROTOCOL_VERSION,
            suites=suites,
            nonce=secrets.token_bytes(NONCE_LEN),
            kx=_public_bytes(self._ephemeral),
            audience=config.audience,
            disclose=tuple(sorted(config.disclose)),
            kem=None if self._kem_key is None else self._kem_key.public_key().public_bytes_raw(),
            fresh=config.fresh_quote,
        )
        self._hello_bytes = self._hello.encode()
        self._outgoing.append(self._hello_bytes)
        self._usage_key = b""
        self._disclose: tuple[str, ...] = ()

    @property
    def client_hello(self) -> bytes:
        """The exact ClientHello bytes sent (for transcripts and billing disputes)."""
        return self._hello_bytes

    @property
    def offered_suites(self) -> tuple[int, ...]:
        """The suites this client offered, in preference order."""
        return self._hello.suites

    def send_request(
        self, method: str, path: str, headers: Headers, *, disclosed: Mapping[str, object]
    ) -> int:
        """Open a stream with request HEADERS; return its id.

        ``disclosed`` must hold exactly the negotiated disclose fields (value None when the
        body lacks the field); it travels in clear, authenticated.
        """
        self._check_can_send()
        content = cbor.encode(
            {
                "method": fields.check_method(method, LocalProtocolError),
                "path": fields.check_path(path, LocalProtocolError),
                "headers": fields.check_headers(headers, LocalProtocolError),
            }
        )
        metadata = cbor.encode(
            fields.check_disclosed(disclosed, self._disclose, LocalProtocolError)
        )
        if len(metadata) > MAX_METADATA_LEN:
            raise LocalProtocolError("metadata-size", "disclosed metadata too large")
        self._require_room([content])
        stream = self._streams.open(self._streams.next_id(), LocalProtocolError)
        try:
            self._seal(RecordType.HEADERS, stream.stream_id, content, metadata)
        except ChannelError:
            self._streams.retire(stream)
            raise
        return stream.stream_id

    def _receive_handshake(self, message: bytes) -> None:
        core_bytes, signature, fin = decode_bridge_hello(message)
        core = BridgeHelloCore.decode(core_bytes)
        if core.suite not in self._hello.suites:
            raise HandshakeError(
                "suite",
                f"the bridge chose suite {describe_suites([core.suite])}, which this client did "
                f"not offer (it offered {describe_suites(self._hello.suites)})",
            )
        if core.disclose != self._hello.disclose:
            raise HandshakeError("disclose", "bridge confirmed a different disclosure set")
        attested_key = core.evidence.attested_key
        if (signature is not None) != (attested_key is not None):
            raise HandshakeError(
                "bridge-hello", "a transcript signature comes with attested-key evidence only"
            )
        mode = core.evidence.mode
        requested = EvidenceMode.FRESH if self._hello.fresh else EvidenceMode.ATTESTED_KEY
        if mode is not requested:  # a downgrade either way (protocol.md §3.6)
            raise HandshakeError(
                "evidence-mode", f"asked for {requested.value} evidence, got {mode.value}"
            )
        if attested_key is not None:
            # Here, not only in the verifier: one written before attested keys existed would
            # accept a stolen key for ever (protocol.md §3.6, "Window check").
            refusal = attested_key.window_refusal(int(self._config.clock()))
            if refusal is not None:
                raise HandshakeError("evidence-window", refusal)
        if attested_key is None:
            expected = compute_report_data(
                self._hello_bytes, core.suite, core.kx, core.usage_key, core.kem_ct or b""
            )
        else:
            expected = compute_key_report_data(attested_key)
        verified = self._verify(core.evidence, core.suite)
        proven = verified.report_data
        if not isinstance(proven, bytes) or len(proven) != REPORT_DATA_LEN:
            raise HandshakeError("report-data", "verifier returned malformed REPORTDATA")
        if not hmac.compare_digest(proven, expected):
            raise HandshakeError(
                "report-data", "REPORTDATA in the evidence does not bind this handshake"
            )
        transcript_hash = compute_transcript_hash(self._hello_bytes, core_bytes)
        if attested_key is not None:
            assert signature is not None  # checked with the mode above
            verify_transcript_signature(attested_key.public_key, transcript_hash, signature)
        assert self._ephemeral is not None
        peer = load_p256_point(core.kx, "bridge key share")
        shared = self._ephemeral.exchange(ec.ECDH(), peer)
        if core.kem_ct is not None:
            assert self._kem_key is not None  # the suite was offered, so the key exists
            shared += self._kem_key.decapsulate(core.kem_ct)
        # Forward secrecy: neither private key is kept.
        self._ephemeral = None
        self._kem_key = None
        keys = derive_session_keys(shared, transcript_hash)
        expected_fin = finished_mac(keys.finished_key, transcript_hash + (signature or b""))
        if not hmac.compare_digest(fin, expected_fin):
            raise HandshakeError("fin", "bridge fin does not match the transcript")
        self._usage_key = core.usage_key
        self._disclose = core.disclose
        self._start_records(keys, transcript_hash, client=True)
        self._events.append(
            HandshakeComplete(
                suite=core.suite,
                simulated=core.suite in SIMULATED_SUITES,
                transcript_hash=transcript_hash,
                disclose=core.disclose,
                audience=self._hello.audience,
                usage_key=core.usage_key,
                report=verified.report,
                evidence_mode=mode,
            )
        )

    def _verify(self, evidence: Evidence, suite: int) -> Any:
        try:
            return self._config.verifier(evidence, suite)
        except ChannelError:
            raise
        except Exception as exc:
            raise HandshakeError(
                "evidence", f"evidence verifier refused: {type(exc).__name__}: {exc}"
            ) from exc

    def _check_metadata_allowed(self, record_type: RecordType, record: Record) -> None:
        if record.metadata and record_type is not RecordType.END:
            raise ProtocolError("metadata", f"{record_type.name} from the bridge has metadata")

    def _parse_headers(self, record: Record) -> Event:
        value = fields.decode_map(record.content, {"status", "headers"}, "response HEADERS")
        status = value["status"]
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ProtocolError("headers", "status must be an integer in 100..599")
        headers = fields.check_headers(fields.pairs(value["headers"]), ProtocolError)
        return ResponseReceived(record.stream_id, status, tuple((n, v) for n, v in headers))

    def _parse_end_metadata(self, record: Record) -> SignedUsage | None:
        if not record.metadata:
            return None
        signed = SignedUsage.from_metadata(record.metadata)
        verify_usage(self._usage_key, self._transcript_hash, record.stream_id, signed)
        return signed


class BridgeConnection(_Connection):
    """The bridge side: answers one ClientHello, then serves requests on streams."""

    _initiates_streams = False

    def __init__(self, config: BridgeConfig) -> None:
        super().__init__(config.limits, config.max_concurrent_streams)
        self._config = config
        self._usage_key = config.usage_signing_key.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )
        self._disclose: tuple[str, ...] = ()

    def send_response(self, stream_id: int, status: int, headers: Headers) -> None:
        """Send response HEADERS on a stream the client opened."""
        self._stream_for_send(stream_id)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise LocalProtocolError("headers", "status must be an integer in 100..599")
        content = cbor.encode(
            {"status": status, "headers": fields.check_headers(headers, LocalProtocolError)}
        )
        self._seal(RecordType.HEADERS, stream_id, content)

    def end_stream(self, stream_id: int, usage: Usage | None = None) -> None:
        """Send END; with ``usage``, sign it and carry it in END's cleartext metadata."""
        metadata = b""
        if usage is not None:
            self._stream_for_send(stream_id)
            signed = sign_usage(
                self._config.usage_signing_key, self._transcript_hash, stream_id, usage
            )
            metadata = signed.to_metadata()
        self._end_stream(stream_id, metadata)

    def _receive_handshake(self, message: bytes) -> None:
        hello = ClientHello.decode(message)
        # The refusals name the bridge's own (public, measured) values first: the bridge may
        # send this text to the client as an unauthenticated hint (protocol.md §9).
        if hello.audience != self._config.audience:
            raise HandshakeError(
                "audience",
                f"this bridge answers to {self._config.audience!r}; the ClientHello named "
                f"{hello.audience!r}",
            )
        suite = next((s for s in hello.suites if s in self._config.suites), None)
        if suite is None:
            supported = sorted(map(int, self._config.suites))
            raise HandshakeError(
                "suite",
                f"no common suite: this bridge supports {supported}; the client offered "
                f"{list(hello.suites)}",
            )
        # Attested-key mode takes its evidence before any key is made: no work is spent on a
        # handshake the bridge cannot answer.
        key_evidence = None if hello.fresh else self._current_key_evidence()
        ephemeral = ec.generate_private_key(ec.SECP256R1())
        kx = _public_bytes(ephemeral)
        kem_secret, kem_ct = b"", None
        if suite in HYBRID_SUITES:
            assert hello.kem is not None  # ClientHello.decode requires it when hybrid is offered
            kem_secret, kem_ct = load_mlkem_key(hello.kem).encapsulate()
        if key_evidence is None:
            report_data = compute_report_data(message, suite, kx, self._usage_key, kem_ct or b"")
            evidence = self._fresh_evidence(report_data)
        else:
            evidence = key_evidence.evidence
        core_bytes = BridgeHelloCore(
            PROTOCOL_VERSION, suite, kx, self._usage_key, hello.disclose, evidence, kem_ct
        ).encode()
        shared = ephemeral.exchange(ec.ECDH(), load_p256_point(hello.kx, "client key share"))
        shared += kem_secret
        del ephemeral  # forward secrecy: the private key is not kept
        transcript_hash = compute_transcript_hash(message, core_bytes)
        signature = None
        if key_evidence is not None:
            signature = self._sign_transcript(key_evidence, transcript_hash)
        keys = derive_session_keys(shared, transcript_hash)
        fin = finished_mac(keys.finished_key, transcript_hash + (signature or b""))
        self._outgoing.append(encode_bridge_hello(core_bytes, fin, signature))
        self._disclose = hello.disclose
        self._start_records(keys, transcript_hash, client=False)
        self._events.append(
            HandshakeComplete(
                suite=suite,
                simulated=suite in SIMULATED_SUITES,
                transcript_hash=transcript_hash,
                disclose=hello.disclose,
                audience=hello.audience,
                usage_key=self._usage_key,
                evidence_mode=evidence.mode,
            )
        )

    def _fresh_evidence(self, report_data: bytes) -> Evidence:
        try:
            evidence = self._config.evidence_provider(report_data)
        except Exception as exc:
            raise HandshakeError("evidence-provider", f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(evidence, Evidence) or evidence.attested_key is not None:
            raise HandshakeError("evidence-provider", "provider did not return fresh Evidence")
        return evidence

    def _current_key_evidence(self) -> KeyEvidence:
        provider = self._config.key_evidence
        if provider is None:
            raise HandshakeError("evidence-unavailable", "this bridge serves fresh quotes only")
        try:
            current = provider()
        except Exception as exc:
            raise HandshakeError(
                "evidence-unavailable", f"no valid attested key: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(current, KeyEvidence):
            raise HandshakeError("evidence-unavailable", "provider did not return KeyEvidence")
        return current

    @staticmethod
    def _sign_transcript(key_evidence: KeyEvidence, transcript_hash: bytes) -> bytes:
        try:
            signature = key_evidence.signer.sign(transcript_signature_input(transcript_hash))
        except Exception as exc:
            raise HandshakeError("evidence-unavailable", f"signing failed: {exc}") from exc
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_LEN:
            raise HandshakeError("evidence-unavailable", "signer returned a malformed signature")
        return signature

    def _check_metadata_allowed(self, record_type: RecordType, record: Record) -> None:
        if record.metadata and record_type is not RecordType.HEADERS:
            raise ProtocolError("metadata", f"{record_type.name} from the client has metadata")

    def _parse_headers(self, record: Record) -> Event:
        value = fields.decode_map(record.content, {"method", "path", "headers"}, "request HEADERS")
        method = fields.check_method(value["method"], ProtocolError)
        path = fields.check_path(value["path"], ProtocolError)
        headers = fields.check_headers(fields.pairs(value["headers"]), ProtocolError)
        if not record.metadata:
            raise ProtocolError("metadata", "request HEADERS lacks the disclosure map")
        disclosed = fields.check_disclosed(
            cbor.decode(record.metadata, max_len=MAX_METADATA_LEN), self._disclose, ProtocolError
        )
        return RequestReceived(
            record.stream_id,
            method,
            path,
            tuple((name, val) for name, val in headers),
            disclosed,
        )

    def _parse_end_metadata(self, record: Record) -> SignedUsage | None:
        return None  # _check_metadata_allowed already refused END metadata from the client


# -- helpers -----------------------------------------------------------------------------------


def _public_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def _check_audience(audience: str) -> None:
    if not isinstance(audience, str) or not 0 < len(audience) <= MAX_AUDIENCE_LEN:
        raise ValueError("audience must be a 1-255 character string")
