"""Intel TDX attestation: quote parsing, DCAP verification, collateral, event logs, policy.

This package depends on nothing else of Shroud's. It verifies real TDX quotes offline, with
the verification time passed explicitly, and can simulate a TDX platform (a generated CA
hierarchy shaped like Intel's) so that the same verification code runs in development and
tests without TDX hardware.
"""
