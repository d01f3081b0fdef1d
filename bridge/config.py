"""The bridge's configuration: one validated, immutable object built from flags, env and TOML.

Sources, highest precedence first: command-line flags, environment variables
(``SHROUD_BRIDGE_<FIELD>``), a TOML file (``--config PATH`` or ``SHROUD_BRIDGE_CONFIG``), then
the defaults declared on :class:`BridgeConfig`. Every source is checked for unknown keys, so a
typo fails the start instead of silently leaving a default in place.

This module also defines what the bridge *measures* about itself:
:func:`effective_config_document` and :func:`effective_config_digest` say exactly which
settings a client can pin through RTMR3 (audience, upstream, allowed paths, disclosure rules).

It deliberately does not start anything, read keys from disk, or talk to the network; the
server's ``main()`` calls :func:`parse_args` and hands the result to the pieces that do.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from enum import StrEnum
from importlib import metadata
from pathlib import Path
from typing import Any, Final, NoReturn
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from shroud_sdk.channel.constants import PROTOCOL_VERSION, SIMULATED_SUITES

ENV_PREFIX: Final = "SHROUD_BRIDGE_"
ENV_CONFIG_FILE: Final = ENV_PREFIX + "CONFIG"
DEMO_UPSTREAM: Final = "demo"

# The SDK policy's default max_evidence_lifetime_seconds (docs/policy.md); a longer
# evidence_lifetime is allowed but warned about.
DEFAULT_CLIENT_MAX_EVIDENCE_LIFETIME: Final = 3600

# Version of the canonical document hashed into RTMR3; bump when its fields change.
CONFIG_DOCUMENT_VERSION: Final = 1

# The OpenAI inference and model-listing surface. /v1/responses is included because openai 3.x
# steers new code to it and vLLM serves it; its stateful siblings (/v1/responses/{id},
# /v1/files, /v1/batches...) are not, because they make the upstream keep user data.
DEFAULT_ALLOWED_PATHS: Final = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/models/*",
    "/v1/responses",
)

# Request fields a client may choose to disclose in clear to the operator (DESIGN.md section 3,
# selective metadata disclosure). Nothing else can be disclosed, whatever a client asks.
DEFAULT_DISCLOSE_ALLOWED: Final = ("max_tokens", "model", "stream")
# Where a hardware bridge keeps the RTMR3 runtime log across process restarts. /run is a tmpfs:
# it lives as long as the TD (and its RTMRs) do, and is empty after a reboot, as RTMR3 is zero.
DEFAULT_STATE_DIR: Final = Path("/run/shroud-bridge")

_DIGEST_RE: Final = re.compile(r"^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$")
_PATH_SEGMENT_RE: Final = re.compile(r"^[A-Za-z0-9._~:@-]+$")
_FIELD_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class ConfigError(ValueError):
    """The configuration is invalid; the message names each bad setting, its source and why."""


class QuoteProviderKind(StrEnum):
    """Where the bridge gets its TDX quotes (see ``bridge.providers``)."""

    CONFIGFS_TSM = "configfs-tsm"
    TDX_GUEST = "tdx-guest"
    SIMULATED = "simulated"


class CollateralSource(StrEnum):
    """Where the bridge fetches the collateral it ships with its evidence, if anywhere."""

    NONE = "none"
    PCS = "pcs"
    PCCS = "pccs"
    SIMULATED = "simulated"


class HostPort(BaseModel):
    """A listen address. Parsed from ``HOST:PORT`` (``[v6addr]:PORT`` for IPv6)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str
    port: int = Field(ge=0, le=65535)

    @classmethod
    def parse(cls, text: str) -> HostPort:
        """Parse ``HOST:PORT``; raise ValueError with the reason otherwise."""
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
            if not sep:
                raise ValueError(f"{text!r} is not [IPv6]:PORT")
            ipaddress.IPv6Address(host)
        else:
            host, sep, port = text.rpartition(":")
            if not sep or not host:
                raise ValueError(f"{text!r} is not HOST:PORT")
            if ":" in host:
                raise ValueError(f"{text!r}: write IPv6 addresses as [addr]:PORT")
        if not port.isdigit():
            raise ValueError(f"{text!r}: port must be a number")
        return cls(host=host, port=int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class BridgeConfig(BaseModel):
    """Everything the bridge needs to start, validated. Immutable; unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    listen: HostPort = Field(default_factory=lambda: HostPort(host="127.0.0.1", port=8443))
    # "demo" (the built-in demo model) or the base URL of an OpenAI-compatible server.
    upstream: str = DEMO_UPSTREAM
    upstream_api_key: SecretStr | None = None
    quote_provider: QuoteProviderKind
    # Given by the deployment (e.g. the container image digest); measured into RTMR3.
    image_digest: str | None = None
    # Client API keys; none configured means any key is accepted (logged loudly at start).
    api_keys: tuple[SecretStr, ...] = ()
    # What a client must name in ClientHello.aud; defaults to the listen address.
    audience: str | None = None
    allowed_paths: tuple[str, ...] = DEFAULT_ALLOWED_PATHS
    disclose_allowed: tuple[str, ...] = DEFAULT_DISCLOSE_ALLOWED
    # Fields the operator requires in clear (e.g. "model" for routing); subset of the above.
    disclose_required: tuple[str, ...] = ()
    max_request_body: int = Field(default=4 * 1024 * 1024, gt=0, le=256 * 1024 * 1024)
    # Objects and arrays one JSON body may hold: the bound on the parse's loop time and heap.
    max_json_containers: int = Field(default=100_000, gt=0, le=100_000_000)
    handshake_timeout: float = Field(default=10.0, gt=0, le=300)
    idle_timeout: float = Field(default=300.0, gt=0, le=86400)
    # WebSocket ping period: keeps proxies' idle timers (nginx proxy_read_timeout, cloud load
    # balancers) from cutting an attested connection that is waiting for its next request.
    ping_interval: float = Field(default=20.0, gt=0, le=3600)
    upstream_connect_timeout: float = Field(default=5.0, gt=0, le=300)
    upstream_read_timeout: float = Field(default=300.0, gt=0, le=3600)
    max_concurrent_handshakes: int = Field(default=16, ge=1, le=10000)
    max_streams_per_session: int = Field(default=32, ge=1, le=10000)
    shutdown_grace: float = Field(default=10.0, ge=0, le=3600)
    # Worker processes sharing the listening socket (bridge.workers); None: one per CPU this
    # process may run on (os.sched_getaffinity: the vCPUs the TD gives it).
    workers: int | None = Field(default=None, ge=1, le=256)
    # Availability bounds (docs/threat-model.md, "Availability"): every one has an attacker
    # test in tests/stress/.
    max_sessions: int = Field(default=1024, ge=1, le=1_000_000)
    max_connections_per_source: int = Field(default=32, ge=1, le=1_000_000)
    max_handshakes_per_source: float = Field(default=20.0, gt=0, le=1_000_000)
    max_buffered_bytes: int = Field(default=256 * 1024 * 1024, gt=0, le=1 << 40)
    max_source_buffered_bytes: int = Field(default=64 * 1024 * 1024, gt=0, le=1 << 40)
    max_session_buffered_bytes: int = Field(default=8 * 1024 * 1024, gt=0, le=1 << 40)
    max_unfinished_streams: int = Field(default=8, ge=1, le=10000)
    # Requests in flight (HEADERS received, not yet done) in all and per source: each holds an
    # upstream connection, so with max_sessions they bound the file descriptors the bridge
    # needs (checked against RLIMIT_NOFILE at start, bridge.descriptors).
    max_streams: int = Field(default=2048, ge=1, le=1_000_000)
    max_source_streams: int = Field(default=512, ge=1, le=1_000_000)
    request_body_timeout: float = Field(default=30.0, gt=0, le=3600)
    send_timeout: float = Field(default=15.0, gt=0, le=3600)
    # Addresses (or CIDR networks) of proxies whose word about the client address is taken.
    trusted_proxies: tuple[str, ...] = ()
    # Expect a PROXY protocol v2 header on every connection from a trusted proxy.
    proxy_protocol: bool = False
    # Log decrypted request paths and query strings (an access log). Off: no path, query or
    # body reaches the log at any level.
    log_request_paths: bool = False
    # None disables the metrics endpoint. Loopback by default: metrics are for the operator.
    metrics_listen: HostPort | None = Field(
        default_factory=lambda: HostPort(host="127.0.0.1", port=9464)
    )
    # The runtime-log state directory; None means DEFAULT_STATE_DIR on hardware and none (the
    # simulated TD's registers live in process memory) with the simulated provider.
    state_dir: Path | None = None
    simulated_dir: Path | None = None
    simulated_seed: str | None = None
    dev_policy_out: Path | None = None
    collateral: CollateralSource | None = None
    pccs_url: str | None = None
    # Attested-key evidence (docs/protocol.md section 3.6): how long one key and its quote are
    # valid. Rotation starts at half-life; default SDK policies accept at most 3600 s.
    evidence_lifetime: int = Field(default=600, ge=10, le=86400)
    # Fresh-mode quotes per client source: a token bucket of this rate and burst (0: refuse
    # fresh mode entirely). The quote concurrency cap (max_concurrent_handshakes) also applies.
    fresh_quotes_per_minute: float = Field(default=6.0, ge=0, le=6000)
    fresh_quote_burst: int = Field(default=2, ge=1, le=1000)
    # The simulated provider's time per quote, to model configfs-tsm / QGS in tests and
    # benchmarks (11 ms with fast polling, about 1 s on a stock kernel).
    simulated_quote_latency: float = Field(default=0.0, ge=0, le=60)

    @field_validator("listen", "metrics_listen", mode="before")
    @classmethod
    def _parse_hostport(cls, value: object) -> object:
        if isinstance(value, str):
            if value.lower() in {"off", "none", ""}:
                return None
            return HostPort.parse(value)
        return value

    @field_validator("upstream")
    @classmethod
    def _check_upstream(cls, value: str) -> str:
        if value == DEMO_UPSTREAM:
            return value
        return _check_http_url(value, "upstream")

    @field_validator("pccs_url")
    @classmethod
    def _check_pccs_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = _check_http_url(value, "pccs_url")
        if not url.startswith("https://"):
            raise ValueError("a PCCS must be reached over https")
        return url

    @field_validator("image_digest")
    @classmethod
    def _check_image_digest(cls, value: str | None) -> str | None:
        if value is not None and not _DIGEST_RE.match(value):
            raise ValueError(
                "must be ALGO:HEX with lower-case hex, ALGO one of sha256, sha384, sha512 "
                "(e.g. an OCI image digest sha256:...)"
            )
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for key in value:
            secret = key.get_secret_value()
            if len(secret) < 16 or any(c.isspace() for c in secret):
                # Do not echo the key: the message ends up in logs.
                raise ValueError("each API key must be at least 16 characters, no whitespace")
        return value

    @field_validator("audience")
    @classmethod
    def _check_audience(cls, value: str | None) -> str | None:
        if value is not None and not (0 < len(value) <= 255 and value.isprintable()):
            raise ValueError("must be 1 to 255 printable characters")
        if value is not None and value != value.strip():
            raise ValueError("must not start or end with whitespace")
        return value

    @field_validator("allowed_paths")
    @classmethod
    def _check_allowed_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one path must be allowed")
        for entry in value:
            base = entry.removesuffix("/*")
            segments = base.split("/")
            if (
                not base.startswith("/")
                or base == "/"
                or any(not _PATH_SEGMENT_RE.match(s) or s in {".", ".."} for s in segments[1:])
            ):
                raise ValueError(f"{entry!r} is not an absolute path like /v1/models or /v1/x/*")
        if len(set(value)) != len(value):
            raise ValueError("duplicate entries")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        normalised = []
        for entry in value:
            try:
                normalised.append(str(ipaddress.ip_network(entry.strip(), strict=True)))
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or a network like 10.0.0.0/8 (host bits "
                    "must be zero)"
                ) from None
        if len(set(normalised)) != len(normalised):
            raise ValueError("duplicate entries")
        return tuple(normalised)

    @field_validator("disclose_allowed", "disclose_required")
    @classmethod
    def _check_field_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _FIELD_NAME_RE.match(name):
                raise ValueError(f"{name!r} is not a request field name (lower_snake_case)")
        if len(set(value)) != len(value):
            raise ValueError("duplicate entries")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_collateral(cls, data: Any) -> Any:
        # Simulated quotes are signed by the simulated CA, so only simulated collateral fits.
        if isinstance(data, dict) and data.get("collateral") is None:
            kind = data.get("quote_provider")
            simulated = str(kind) == QuoteProviderKind.SIMULATED.value
            data = {
                **data,
                "collateral": CollateralSource.SIMULATED if simulated else CollateralSource.NONE,
            }
        return data

    @model_validator(mode="after")
    def _check_combinations(self) -> BridgeConfig:
        simulated = self.quote_provider is QuoteProviderKind.SIMULATED
        if not simulated and self.image_digest is None:
            raise ValueError(
                "image_digest is required with a hardware quote provider: without it a client "
                "cannot pin what runs"
            )
        if not simulated:
            for name in ("simulated_dir", "simulated_seed", "dev_policy_out"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} only applies to the simulated quote provider")
            if self.simulated_quote_latency:
                raise ValueError(
                    "simulated_quote_latency only applies to the simulated quote provider"
                )
        if simulated and self.collateral not in {CollateralSource.SIMULATED, CollateralSource.NONE}:
            raise ValueError("simulated quotes need collateral 'simulated' or 'none'")
        if not simulated and self.collateral is CollateralSource.SIMULATED:
            raise ValueError("collateral 'simulated' only applies to the simulated quote provider")
        if (self.collateral is CollateralSource.PCCS) != (self.pccs_url is not None):
            raise ValueError("pccs_url is required with collateral 'pccs' and only then")
        missing = set(self.disclose_required) - set(self.disclose_allowed)
        if missing:
            raise ValueError(f"disclose_required {sorted(missing)} not in disclose_allowed")
        if self.metrics_listen is not None and self.metrics_listen == self.listen:
            raise ValueError("metrics_listen must differ from listen")
        shares = (
            self.max_request_body,
            self.max_session_buffered_bytes,
            self.max_source_buffered_bytes,
            self.max_buffered_bytes,
        )
        if list(shares) != sorted(shares):
            got = ", ".join(map(str, shares))
            raise ValueError(
                "need max_request_body <= max_session_buffered_bytes <= "
                f"max_source_buffered_bytes <= max_buffered_bytes (got {got}): one whole "
                "request must fit a session's share, and a session's share a source's"
            )
        if self.max_source_streams > self.max_streams:
            raise ValueError(
                f"need max_source_streams <= max_streams (got {self.max_source_streams}, "
                f"{self.max_streams}): one source's share is part of the whole"
            )
        if self.proxy_protocol and not self.trusted_proxies:
            raise ValueError("proxy_protocol needs trusted_proxies (who may send the header)")
        return self

    # -- derived values ---------------------------------------------------------------------

    @property
    def effective_workers(self) -> int:
        """How many worker processes serve: ``workers``, else the CPUs this process may use."""
        return self.workers if self.workers is not None else len(os.sched_getaffinity(0))

    def per_worker(self, workers: int) -> BridgeConfig:
        """This configuration as one of ``workers`` processes applies it (docs/deployment.md,
        "Workers"): every bridge-wide or per-source bound is divided among the workers,
        rounded down and never below 1, so that together they never exceed the configured
        figure; per-session and per-stream bounds stay as they are (a session lives in one
        worker). The metrics endpoint and the development policy belong to the parent.
        """
        if workers <= 1:
            return self

        def share(value: int) -> int:
            return max(1, value // workers)

        return self.model_copy(
            update={
                "workers": 1,
                "max_sessions": share(self.max_sessions),
                "max_connections_per_source": share(self.max_connections_per_source),
                "max_handshakes_per_source": self.max_handshakes_per_source / workers,
                "max_concurrent_handshakes": share(self.max_concurrent_handshakes),
                "max_buffered_bytes": share(self.max_buffered_bytes),
                "max_source_buffered_bytes": share(self.max_source_buffered_bytes),
                "max_streams": share(self.max_streams),
                "max_source_streams": share(self.max_source_streams),
                "fresh_quotes_per_minute": self.fresh_quotes_per_minute / workers,
                "fresh_quote_burst": share(self.fresh_quote_burst),
                "metrics_listen": None,
                "dev_policy_out": None,
            }
        )

    @property
    def effective_audience(self) -> str:
        """The audience clients must name: explicit, or ``HOST:PORT`` of the listen address.

        Behind a load balancer or under a DNS name, set ``audience`` explicitly: the default is
        only right when clients connect to the listen address itself.
        """
        return self.audience if self.audience is not None else str(self.listen)

    @property
    def effective_state_dir(self) -> Path | None:
        """Where the runtime log is persisted: explicit, the tmpfs default on hardware, or None.

        None (simulated provider, no ``state_dir``): the log lives only in this process, like
        the simulated TD's registers.
        """
        if self.state_dir is not None:
            return self.state_dir
        return None if self.quote_provider is QuoteProviderKind.SIMULATED else DEFAULT_STATE_DIR

    @property
    def accepts_any_key(self) -> bool:
        """True when no API key is configured, so the bridge admits every client key."""
        return not self.api_keys

    @property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``trusted_proxies`` parsed."""
        return tuple(ipaddress.ip_network(entry) for entry in self.trusted_proxies)

    @property
    def upstream_is_demo(self) -> bool:
        """True when the built-in demo model serves requests instead of a real upstream."""
        return self.upstream == DEMO_UPSTREAM

    def match_allowed_path(self, path: str) -> str | None:
        """Return the allowlist entry that admits ``path`` (query string ignored), or None.

        An entry matches its exact path; an entry ending in ``/*`` matches its base followed by
        one or more further segments of unreserved characters (model ids such as
        ``org/model-7b``). Percent-encoding, empty, ``.`` and ``..`` segments never match, so
        no encoding trick reaches a path the allowlist does not name.
        """
        path = path.partition("?")[0]
        if not path.startswith("/"):
            return None
        segments = path.split("/")[1:]
        if any(not _PATH_SEGMENT_RE.match(s) or s in {".", ".."} for s in segments):
            return None
        for entry in self.allowed_paths:
            if entry.endswith("/*"):
                base = entry[:-2]
                if path.startswith(base + "/") and len(path) > len(base) + 1:
                    return entry
            elif path == entry:
                return entry
        return None

    def redacted_summary(self) -> str:
        """A multi-line, human-readable summary for the start-up log; secrets are redacted."""
        lines = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "api_keys":
                shown = f"{len(value)} key(s) [redacted]" if value else "none: ANY KEY ACCEPTED"
            elif isinstance(value, SecretStr):
                shown = "[redacted]"
            elif isinstance(value, tuple):
                shown = ", ".join(str(v) for v in value) or "(none)"
            elif value is None:
                shown = "(unset)"
            else:
                shown = str(value)
            lines.append(f"  {name} = {shown}")
        lines.append(f"  (effective audience = {self.effective_audience})")
        state = self.effective_state_dir
        lines.append(f"  (runtime log state dir = {state if state is not None else 'none'})")
        lines.append(f"  (config hash = sha384:{effective_config_digest(self).hex()})")
        return "shroud-bridge configuration:\n" + "\n".join(lines)


ANY_KEY_WARNING: Final = (
    "NO API KEY CONFIGURED: this bridge accepts ANY client API key. Set --api-key (or "
    "SHROUD_BRIDGE_API_KEYS) to restrict who can use the upstream."
)


def startup_warnings(config: BridgeConfig) -> list[str]:
    """The warnings a bridge logs once at start (``bridge.server.prepare_bridge``), loudest
    first (empty when none apply)."""
    warnings = []
    if config.quote_provider is QuoteProviderKind.SIMULATED:
        # The provider itself says that its quotes prove nothing; this is what clients see.
        warnings.append(
            "SIMULATED TEE: announcing only the simulated suites "
            f"{sorted(map(int, SIMULATED_SUITES))}; production clients refuse them"
        )
    if config.accepts_any_key:
        warnings.append(ANY_KEY_WARNING)
    if config.evidence_lifetime > DEFAULT_CLIENT_MAX_EVIDENCE_LIFETIME:
        warnings.append(
            f"evidence_lifetime is {config.evidence_lifetime} s: clients with the default policy "
            f"refuse attested keys valid longer than {DEFAULT_CLIENT_MAX_EVIDENCE_LIFETIME} s "
            "(max_evidence_lifetime_seconds)"
        )
    if config.audience is None and _is_wildcard(config.listen.host):
        warnings.append(
            f"audience defaults to {config.effective_audience!r}, a wildcard address no client "
            "will name; set --audience to the name clients connect to"
        )
    if config.metrics_listen is not None and not _is_loopback(config.metrics_listen.host):
        warnings.append(f"/metrics is served on {config.metrics_listen}, not only on loopback")
    if not config.upstream_is_demo and config.upstream.startswith("http://"):
        host = urlsplit(config.upstream).hostname or ""
        if not _is_loopback(host):
            warnings.append(
                f"upstream {config.upstream} is plain http to another host: requests leave the "
                "TD unencrypted"
            )
    return warnings


def _is_wildcard(host: str) -> bool:
    return host in {"0.0.0.0", "::", ""}  # noqa: S104 - comparing, not binding


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_http_url(value: str, name: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"{name} must be an http(s) URL or {DEMO_UPSTREAM!r}")
    if parts.username or parts.password:
        raise ValueError(f"{name} must not carry credentials in the URL")
    if parts.query or parts.fragment:
        raise ValueError(f"{name} must not have a query or fragment")
    return value.rstrip("/")


# -- the measured configuration ------------------------------------------------------------


def effective_config_document(config: BridgeConfig) -> bytes:
    """The canonical bytes of the settings that decide where a client's data may go.

    A JSON object, keys sorted, no whitespace, ASCII only (so any language reproduces it
    byte for byte)::

        {"allowed_paths":[...sorted...],"audience":"...","disclose_allowed":[...sorted...],
         "disclose_required":[...sorted...],"upstream":"demo" | "https://...","v":1}

    ``audience`` is the effective audience; ``upstream`` is the normalised URL (no trailing
    slash). Keys, timeouts and limits are deliberately left out: they do not change where data
    goes, and keys are secret.
    """
    document = {
        "v": CONFIG_DOCUMENT_VERSION,
        "audience": config.effective_audience,
        "upstream": config.upstream,
        "allowed_paths": sorted(config.allowed_paths),
        "disclose_allowed": sorted(config.disclose_allowed),
        "disclose_required": sorted(config.disclose_required),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


def effective_config_digest(config: BridgeConfig) -> bytes:
    """SHA-384 of :func:`effective_config_document`: the value measured into RTMR3."""
    return hashlib.sha384(effective_config_document(config)).digest()


# -- sources ---------------------------------------------------------------------------------

# Fields given as lists; in the environment they are comma-separated.
_LIST_FIELDS: Final = frozenset(
    {"api_keys", "allowed_paths", "disclose_allowed", "disclose_required", "trusted_proxies"}
)


class _RaisingParser(argparse.ArgumentParser):
    """argparse that raises ConfigError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"command line: {message}")


def package_version() -> str:
    """The installed shroud-sdk version ("unknown" when run from an uninstalled tree)."""
    try:
        return metadata.version("shroud-sdk")
    except metadata.PackageNotFoundError:
        return "unknown"


def _default(field: str) -> Any:
    """A ``BridgeConfig`` field's default, for help texts (so they cannot drift from it)."""
    info = BridgeConfig.model_fields[field]
    return info.get_default(call_default_factory=True)


def build_arg_parser() -> argparse.ArgumentParser:
    """The ``shroud-bridge`` argument parser (flags default to None: "not given")."""
    p = _RaisingParser(
        prog="shroud-bridge",
        description="Attested, end-to-end encrypted front for an OpenAI-compatible server.",
        epilog="Each flag can also be set as SHROUD_BRIDGE_<NAME> in the environment (e.g. "
        "SHROUD_BRIDGE_LISTEN, SHROUD_BRIDGE_API_KEYS, comma-separated for lists) or in the "
        "--config file; the command line wins over the environment, which wins over the file. "
        "docs/deployment.md describes a production setup.",
        argument_default=None,
    )
    p.add_argument(
        "--version",
        action="version",
        version=f"shroud-bridge {package_version()} (protocol shroud/{PROTOCOL_VERSION})",
    )
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--listen", help="HOST:PORT to serve the WebSocket endpoint on")
    p.add_argument("--upstream", help="base URL of the OpenAI-compatible server, or 'demo'")
    p.add_argument("--upstream-api-key", help="key the bridge presents to the upstream")
    p.add_argument(
        "--quote-provider",
        choices=[k.value for k in QuoteProviderKind],
        help="where quotes come from: the TD's configfs-tsm, the legacy /dev/tdx_guest, or "
        "'simulated' (development only; clients refuse it unless their policy allows it)",
    )
    p.add_argument("--image-digest", help="deployment image digest, e.g. sha256:<hex>")
    p.add_argument(
        "--api-key",
        dest="api_keys",
        action="append",
        help="accepted client API key (repeatable; prefer SHROUD_BRIDGE_API_KEYS: argv is public)",
    )
    p.add_argument("--audience", help="audience clients must name (default: the listen address)")
    p.add_argument(
        "--allow-path", dest="allowed_paths", action="append", help="allowed path (repeatable)"
    )
    p.add_argument(
        "--disclose-allowed",
        dest="disclose_allowed",
        action="append",
        help="request field clients may show in clear (repeatable; default: "
        f"{', '.join(_default('disclose_allowed'))})",
    )
    p.add_argument(
        "--disclose-required",
        dest="disclose_required",
        action="append",
        help="request field clients must show in clear (repeatable; default: none)",
    )
    p.add_argument(
        "--max-request-body",
        type=int,
        help=f"largest request body in bytes; larger: 413 (default {_default('max_request_body')})",
    )
    p.add_argument(
        "--max-json-containers",
        type=int,
        help="most JSON objects and arrays a request body may hold; more: 400 "
        f"(default {_default('max_json_containers')})",
    )
    p.add_argument(
        "--handshake-timeout",
        type=float,
        help="seconds a client has for the WebSocket upgrade, ClientHello and quote, then it is "
        f"closed (default {_default('handshake_timeout')})",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        help="seconds without streams or records before an idle session is closed (default "
        f"{_default('idle_timeout')})",
    )
    p.add_argument(
        "--ping-interval",
        type=float,
        help="seconds between WebSocket pings, below proxies' idle timeouts (default "
        f"{_default('ping_interval')})",
    )
    p.add_argument(
        "--upstream-connect-timeout",
        type=float,
        help=f"seconds to connect to the upstream (default {_default('upstream_connect_timeout')})",
    )
    p.add_argument(
        "--upstream-read-timeout",
        type=float,
        help="seconds to wait for each read from the upstream (default "
        f"{_default('upstream_read_timeout')})",
    )
    p.add_argument(
        "--max-concurrent-handshakes",
        type=int,
        help="fresh-mode handshakes (each waits for a quote) in progress at once, at most half "
        "of them for one client address; more are refused with close 1013 until one ends; "
        "attested-key handshakes need no quote and no slot (default "
        f"{_default('max_concurrent_handshakes')})",
    )
    p.add_argument(
        "--max-streams-per-session",
        type=int,
        help="requests in flight per client connection; more get 429 (default "
        f"{_default('max_streams_per_session')})",
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        help="seconds in-flight requests get to finish after SIGTERM (default "
        f"{_default('shutdown_grace')})",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="worker processes, each with its own event loop, attested key and quote, sharing "
        "the listening socket; the bridge-wide and per-source limits are divided among them "
        "(default: one per CPU this process may use)",
    )
    limits = p.add_argument_group(
        "availability limits",
        "bounds on what clients can make the bridge hold (docs/deployment.md, "
        '"Availability limits"); a client address is the TCP peer unless --trusted-proxy says '
        "otherwise",
    )
    limits.add_argument(
        "--max-sessions",
        type=int,
        help="open connections in any state; over it a new connection gets 503 (default "
        f"{_default('max_sessions')})",
    )
    limits.add_argument(
        "--max-connections-per-source",
        type=int,
        help="open connections from one client address (an IPv6 client: its /64); over it: 429 "
        f"(default {_default('max_connections_per_source')})",
    )
    limits.add_argument(
        "--max-handshakes-per-source",
        type=float,
        help="handshakes (new connections) per second from one client address, in bursts of "
        f"up to the same number; over it: 429 (default {_default('max_handshakes_per_source')})",
    )
    limits.add_argument(
        "--max-buffered-bytes",
        type=int,
        help="request bytes (headers and bodies) held across all sessions; over it: 503 "
        f"(default {_default('max_buffered_bytes')})",
    )
    limits.add_argument(
        "--max-source-buffered-bytes",
        type=int,
        help="share of --max-buffered-bytes one client address may hold; over it: 429 (default "
        f"{_default('max_source_buffered_bytes')})",
    )
    limits.add_argument(
        "--max-session-buffered-bytes",
        type=int,
        help="share of --max-source-buffered-bytes one connection may hold; over it: 429 "
        f"(default {_default('max_session_buffered_bytes')})",
    )
    limits.add_argument(
        "--max-unfinished-streams",
        type=int,
        help="requests on one connection whose body has not ended; over it: 429 (default "
        f"{_default('max_unfinished_streams')})",
    )
    limits.add_argument(
        "--max-streams",
        type=int,
        help="requests in flight across all sessions, each holding an upstream connection; "
        f"over it: 503 (default {_default('max_streams')})",
    )
    limits.add_argument(
        "--max-source-streams",
        type=int,
        help="share of --max-streams one client address may hold; over it: 429 (default "
        f"{_default('max_source_streams')})",
    )
    limits.add_argument(
        "--request-body-timeout",
        type=float,
        help="seconds from a request's HEADERS to its END, then 408 (default "
        f"{_default('request_body_timeout')})",
    )
    limits.add_argument(
        "--send-timeout",
        type=float,
        help="seconds any one send, flush or close to a client may take, then the connection "
        f"is aborted (default {_default('send_timeout')})",
    )
    limits.add_argument(
        "--trusted-proxy",
        dest="trusted_proxies",
        action="append",
        help="address or network of a proxy whose X-Forwarded-For (or PROXY header) names the "
        "client (repeatable; default: none, the TCP peer is the client)",
    )
    limits.add_argument(
        "--proxy-protocol",
        action="store_const",
        const=True,
        help="require a PROXY protocol v2 header on connections from trusted proxies (default "
        "off; needs --trusted-proxy)",
    )
    p.add_argument(
        "--log-request-paths",
        action="store_const",
        const=True,
        help="log each decrypted request's method, path and query (default off: never logged)",
    )
    p.add_argument(
        "--metrics-listen",
        help=f"HOST:PORT for Prometheus /metrics, or 'off' (default {_default('metrics_listen')};"
        " two bridges on one host need different ones)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        help=f"tmpfs directory for the RTMR3 runtime log (default on hardware {DEFAULT_STATE_DIR})",
    )
    p.add_argument("--simulated-dir", type=Path, help="where the simulated platform is kept")
    p.add_argument("--simulated-seed", help="seed for a reproducible simulated platform")
    p.add_argument(
        "--dev-policy-out",
        type=Path,
        help="with the simulated provider: write a development policy trusting this bridge to "
        "this path, once its ports are bound",
    )
    p.add_argument(
        "--collateral",
        choices=[c.value for c in CollateralSource],
        help="Intel collateral the bridge ships with its evidence, so clients need not fetch "
        "it (default: simulated with the simulated provider, none otherwise)",
    )
    p.add_argument("--pccs-url", help="https URL of a PCCS (with --collateral pccs)")
    p.add_argument(
        "--evidence-lifetime",
        type=int,
        help="seconds one attested key and its quote are valid (default "
        f"{_default('evidence_lifetime')})",
    )
    p.add_argument(
        "--fresh-quotes-per-minute",
        type=float,
        help="fresh-mode quotes per client source and minute; 0 refuses fresh mode (default "
        f"{_default('fresh_quotes_per_minute')})",
    )
    p.add_argument(
        "--fresh-quote-burst",
        type=int,
        help=f"fresh-mode burst per source (default {_default('fresh_quote_burst')})",
    )
    p.add_argument(
        "--simulated-quote-latency",
        type=float,
        help="seconds per simulated quote, serialised per host, modelling configfs-tsm/QGS time "
        f"(default {_default('simulated_quote_latency')})",
    )
    return p


def _field_names() -> frozenset[str]:
    return frozenset(BridgeConfig.model_fields)


def _from_env(environ: Mapping[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    known = _field_names()
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_CONFIG_FILE:
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in known:
            raise ConfigError(f"environment: unknown variable {key}")
        if name in _LIST_FIELDS:
            values[name] = tuple(item.strip() for item in raw.split(",") if item.strip())
        else:
            values[name] = raw
    return values


def _from_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML ({exc})") from exc
    unknown = set(data) - _field_names()
    if unknown:
        raise ConfigError(f"config file {path}: unknown key(s) {', '.join(sorted(unknown))}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def load_config(
    flags: Mapping[str, object],
    environ: Mapping[str, str],
    toml_path: Path | None,
) -> BridgeConfig:
    """Merge the sources (flags > environ > TOML file > defaults) and validate the result.

    ``flags`` maps field names to values given on the command line (None means not given).
    Raises :class:`ConfigError` naming every invalid setting and the source it came from.
    """
    layers: list[tuple[str, dict[str, object]]] = []
    if toml_path is not None:
        layers.append((f"config file {toml_path}", _from_toml(toml_path)))
    layers.append(("environment", _from_env(environ)))
    layers.append(("command line", {k: v for k, v in flags.items() if v is not None}))

    merged: dict[str, object] = {}
    origin: dict[str, str] = {}
    for source, values in layers:
        for name, value in values.items():
            merged[name] = tuple(value) if isinstance(value, list) else value
            origin[name] = source
    try:
        return BridgeConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None


def _describe(exc: ValidationError, origin: Mapping[str, str]) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        location = error["loc"]
        name = str(location[0]) if location else "configuration"
        where = f" (from {origin[name]})" if name in origin else ""
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{name}{where}: {message}")
    return "invalid bridge configuration:\n  " + "\n  ".join(problems)


def parse_args(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> BridgeConfig:
    """Build the configuration from ``argv`` (without the program name) and the environment.

    ``environ`` defaults to ``os.environ``. Raises :class:`ConfigError` on any bad input;
    ``--help`` prints usage and raises ``SystemExit(0)``, as argparse does.
    """
    env = os.environ if environ is None else environ
    namespace = build_arg_parser().parse_args(list(argv))
    flags = vars(namespace)
    toml_path = flags.pop("config")
    if toml_path is None and env.get(ENV_CONFIG_FILE):
        toml_path = Path(env[ENV_CONFIG_FILE])
    return load_config(flags, env, toml_path)
