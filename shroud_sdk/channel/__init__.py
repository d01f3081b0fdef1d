"""The shroud/1 channel core: handshake, key schedule, records and streams, without I/O."""
