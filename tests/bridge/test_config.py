"""Configuration: sources and precedence, validation, redaction, the measured config digest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bridge.config import (
    ANY_KEY_WARNING,
    DEFAULT_ALLOWED_PATHS,
    BridgeConfig,
    CollateralSource,
    ConfigError,
    HostPort,
    QuoteProviderKind,
    build_arg_parser,
    effective_config_digest,
    effective_config_document,
    parse_args,
    startup_warnings,
)

KEY_A = "sk-test-aaaaaaaaaaaaaaaa"
KEY_B = "sk-test-bbbbbbbbbbbbbbbb"
DIGEST = "sha256:" + "ab" * 32


def _sim(*extra: str, env: dict[str, str] | None = None) -> BridgeConfig:
    return parse_args(["--quote-provider", "simulated", *extra], environ=env or {})


def test_defaults_with_simulated_provider() -> None:
    config = _sim()
    assert config.quote_provider is QuoteProviderKind.SIMULATED
    assert config.listen == HostPort(host="127.0.0.1", port=8443)
    assert config.upstream_is_demo
    assert config.allowed_paths == DEFAULT_ALLOWED_PATHS
    assert config.collateral is CollateralSource.SIMULATED
    assert config.accepts_any_key
    assert config.effective_audience == "127.0.0.1:8443"


def test_missing_quote_provider_is_rejected_not_defaulted() -> None:
    with pytest.raises(ConfigError, match="quote_provider"):
        parse_args([], environ={})


def test_hardware_provider_without_image_digest_is_rejected() -> None:
    with pytest.raises(ConfigError, match="image_digest is required"):
        parse_args(["--quote-provider", "configfs-tsm"], environ={})


def test_precedence_flags_over_env_over_toml(tmp_path: Path) -> None:
    toml = tmp_path / "bridge.toml"
    toml.write_text(
        'quote_provider = "simulated"\nlisten = "0.0.0.0:1000"\naudience = "from-toml"\n'
        'upstream = "http://toml.invalid:1"\n'
    )
    env = {
        "SHROUD_BRIDGE_CONFIG": str(toml),
        "SHROUD_BRIDGE_LISTEN": "127.0.0.2:2000",
        "SHROUD_BRIDGE_AUDIENCE": "from-env",
    }
    config = parse_args(["--audience", "from-flag"], environ=env)
    assert config.audience == "from-flag"  # flag beats env and toml
    assert config.listen == HostPort(host="127.0.0.2", port=2000)  # env beats toml
    assert config.upstream == "http://toml.invalid:1"  # toml beats default


def test_config_flag_overrides_env_config_path(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('quote_provider = "simulated"\n')
    config = parse_args(["--config", str(good)], environ={"SHROUD_BRIDGE_CONFIG": "/nonexistent"})
    assert config.quote_provider is QuoteProviderKind.SIMULATED


def test_api_key_flag_is_repeatable_and_env_is_comma_separated() -> None:
    config = _sim("--api-key", KEY_A, "--api-key", KEY_B)
    assert [k.get_secret_value() for k in config.api_keys] == [KEY_A, KEY_B]
    config = _sim(env={"SHROUD_BRIDGE_API_KEYS": f"{KEY_A}, {KEY_B}"})
    assert [k.get_secret_value() for k in config.api_keys] == [KEY_A, KEY_B]
    assert not config.accepts_any_key


def test_typo_in_env_variable_is_rejected() -> None:
    with pytest.raises(ConfigError, match="SHROUD_BRIDGE_LISTN"):
        _sim(env={"SHROUD_BRIDGE_LISTN": "0.0.0.0:1"})


def test_unknown_toml_key_is_rejected(tmp_path: Path) -> None:
    toml = tmp_path / "b.toml"
    toml.write_text('quote_provider = "simulated"\nverify = false\n')
    with pytest.raises(ConfigError, match=r"unknown key.*verify"):
        parse_args(["--config", str(toml)], environ={})


def test_malformed_toml_is_a_config_error(tmp_path: Path) -> None:
    toml = tmp_path / "b.toml"
    toml.write_text("quote_provider = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_args(["--config", str(toml)], environ={})


def test_missing_toml_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        parse_args(["--config", str(tmp_path / "absent.toml")], environ={})


def test_unknown_flag_raises_instead_of_exiting() -> None:
    with pytest.raises(ConfigError, match="unrecognized arguments"):
        _sim("--no-verify")


def test_error_names_the_setting_and_its_source() -> None:
    with pytest.raises(ConfigError) as info:
        _sim(env={"SHROUD_BRIDGE_HANDSHAKE_TIMEOUT": "-1"})
    assert "handshake_timeout (from environment)" in str(info.value)


@pytest.mark.parametrize(
    "listen", ["nohost", "host:", ":80", "host:99999", "::1:80", "[zz]:80", "host:eighty"]
)
def test_malformed_listen_address_is_rejected(listen: str) -> None:
    with pytest.raises(ConfigError, match="listen"):
        _sim("--listen", listen)


def test_ipv6_listen_address() -> None:
    config = _sim("--listen", "[::1]:9000")
    assert config.listen == HostPort(host="::1", port=9000)
    assert config.effective_audience == "[::1]:9000"


@pytest.mark.parametrize(
    "upstream",
    ["ftp://x", "http://user:pw@host", "notaurl", "http://host/?q=1", "https://"],
)
def test_bad_upstream_is_rejected(upstream: str) -> None:
    with pytest.raises(ConfigError, match="upstream"):
        _sim("--upstream", upstream)


def test_upstream_trailing_slash_is_normalised() -> None:
    assert _sim("--upstream", "http://vllm:8000/v1/").upstream == "http://vllm:8000/v1"


@pytest.mark.parametrize("digest", ["sha256:abc", "md5:" + "a" * 32, "sha256:" + "AB" * 32, "x"])
def test_malformed_image_digest_is_rejected(digest: str) -> None:
    with pytest.raises(ConfigError, match="image_digest"):
        _sim("--image-digest", digest)


def test_short_api_key_is_rejected_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as info:
        _sim("--api-key", "short-secret")
    assert "api_keys" in str(info.value)
    assert "short-secret" not in str(info.value)


def test_simulated_only_options_are_rejected_with_hardware_provider(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dev_policy_out only applies"):
        parse_args(
            [
                "--quote-provider",
                "tdx-guest",
                "--image-digest",
                DIGEST,
                "--dev-policy-out",
                str(tmp_path / "p.toml"),
            ],
            environ={},
        )


def test_simulated_collateral_with_hardware_provider_is_rejected() -> None:
    with pytest.raises(ConfigError, match="collateral 'simulated'"):
        parse_args(
            [
                "--quote-provider",
                "configfs-tsm",
                "--image-digest",
                DIGEST,
                "--collateral",
                "simulated",
            ],
            environ={},
        )


def test_pccs_needs_an_https_url() -> None:
    base = ["--quote-provider", "configfs-tsm", "--image-digest", DIGEST, "--collateral", "pccs"]
    with pytest.raises(ConfigError, match="pccs_url is required"):
        parse_args(base, environ={})
    with pytest.raises(ConfigError, match="https"):
        parse_args([*base, "--pccs-url", "http://pccs.local:8081"], environ={})
    config = parse_args([*base, "--pccs-url", "https://pccs.local:8081"], environ={})
    assert config.pccs_url == "https://pccs.local:8081"


def test_required_disclosure_must_be_allowed() -> None:
    with pytest.raises(ConfigError, match="not in disclose_allowed"):
        _sim("--disclose-required", "temperature")


@pytest.mark.parametrize("path", ["v1/models", "/", "/v1/../admin", "/v1//x", "/v1/%2e%2e"])
def test_malformed_allowed_path_is_rejected(path: str) -> None:
    with pytest.raises(ConfigError, match="allowed_paths"):
        _sim("--allow-path", path)


def test_config_is_frozen() -> None:
    config = _sim()
    with pytest.raises(ValueError, match="frozen"):
        setattr(config, "upstream", "http://elsewhere")  # noqa: B010


def test_path_allowlist_matching() -> None:
    config = _sim()
    assert config.match_allowed_path("/v1/chat/completions") == "/v1/chat/completions"
    assert config.match_allowed_path("/v1/chat/completions?x=1") == "/v1/chat/completions"
    assert config.match_allowed_path("/v1/models/org/model-7b") == "/v1/models/*"
    assert config.match_allowed_path("/v1/models") == "/v1/models"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/files",
        "/v1/chat/completions/",
        "/v1/chat/completions/../../admin",
        "/v1/models/../files",
        "/v1/models/",
        "/v1/models/%2e%2e/files",
        "/v1/chat%2Fcompletions",
        "v1/models",
        "",
    ],
)
def test_path_outside_allowlist_is_refused(path: str) -> None:
    assert _sim().match_allowed_path(path) is None


def test_redacted_summary_hides_every_secret() -> None:
    config = _sim("--api-key", KEY_A, "--upstream-api-key", "upstream-secret-0123456789")
    summary = config.redacted_summary()
    assert KEY_A not in summary
    assert "upstream-secret-0123456789" not in summary
    assert "1 key(s) [redacted]" in summary
    assert KEY_A not in repr(config)
    assert "upstream-secret" not in repr(config)


def test_json_container_limit_is_a_setting() -> None:
    assert _sim().max_json_containers == 100_000
    assert _sim("--max-json-containers", "5000").max_json_containers == 5000
    with pytest.raises(ConfigError, match="max_json_containers"):
        _sim("--max-json-containers", "0")


def test_summary_says_loudly_that_any_key_is_accepted() -> None:
    assert "ANY KEY ACCEPTED" in _sim().redacted_summary()


def test_config_document_is_canonical_and_documented() -> None:
    config = _sim(
        "--audience",
        "bridge.example",
        "--upstream",
        "https://vllm.internal/v1",
        "--allow-path",
        "/v1/models",
        "--allow-path",
        "/v1/chat/completions",
    )
    document = effective_config_document(config)
    assert document == (
        b'{"allowed_paths":["/v1/chat/completions","/v1/models"],"audience":"bridge.example",'
        b'"disclose_allowed":["max_tokens","model","stream"],"disclose_required":[],'
        b'"upstream":"https://vllm.internal/v1","v":1}'
    )
    assert json.loads(document)["v"] == 1
    assert effective_config_digest(config) == hashlib.sha384(document).digest()


def test_config_digest_ignores_order_and_secrets() -> None:
    a = _sim("--allow-path", "/v1/models", "--allow-path", "/v1/embeddings", "--api-key", KEY_A)
    b = _sim("--allow-path", "/v1/embeddings", "--allow-path", "/v1/models")
    assert effective_config_digest(a) == effective_config_digest(b)


@pytest.mark.parametrize(
    "flags",
    [
        ("--upstream", "https://attacker.example/v1"),
        ("--audience", "other-deployment"),
        ("--allow-path", "/v1/files"),
        ("--disclose-allowed", "messages"),
        ("--disclose-required", "model"),
    ],
)
def test_changing_where_data_goes_changes_the_config_digest(flags: tuple[str, str]) -> None:
    assert effective_config_digest(_sim(*flags)) != effective_config_digest(_sim())


def test_start_warnings_say_loudly_that_any_key_is_accepted() -> None:
    assert ANY_KEY_WARNING in startup_warnings(_sim())
    assert ANY_KEY_WARNING not in startup_warnings(_sim("--api-key", KEY_A))


def test_start_warnings_cover_simulated_wildcard_metrics_plain_upstream_long_evidence() -> None:
    warnings = " | ".join(
        startup_warnings(
            _sim(
                "--listen",
                "0.0.0.0:8443",
                "--metrics-listen",
                "0.0.0.0:9464",
                "--upstream",
                "http://10.0.0.5:8000/v1",
                "--evidence-lifetime",
                "7200",
            )
        )
    )
    assert "SIMULATED" in warnings
    assert "evidence_lifetime is 7200 s" in warnings
    assert "wildcard" in warnings
    assert "/metrics" in warnings
    assert "unencrypted" in warnings


def test_no_spurious_warnings_for_a_careful_hardware_config() -> None:
    config = parse_args(
        [
            "--quote-provider",
            "configfs-tsm",
            "--image-digest",
            DIGEST,
            "--api-key",
            KEY_A,
            "--listen",
            "0.0.0.0:8443",
            "--audience",
            "bridge.example",
            "--upstream",
            "http://127.0.0.1:8000/v1",
        ],
        environ={},
    )
    assert startup_warnings(config) == []


def test_metrics_can_be_turned_off() -> None:
    assert _sim("--metrics-listen", "off").metrics_listen is None


# -- availability limits ------------------------------------------------------------------------

LIMIT_FLAGS = (
    "--max-sessions",
    "--max-connections-per-source",
    "--max-handshakes-per-source",
    "--max-buffered-bytes",
    "--max-source-buffered-bytes",
    "--max-session-buffered-bytes",
    "--max-unfinished-streams",
    "--request-body-timeout",
    "--send-timeout",
    "--trusted-proxy",
    "--proxy-protocol",
    "--log-request-paths",
)


def test_every_limit_is_in_help_with_an_explanation(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--help"], environ={})
    text = capsys.readouterr().out
    helps = {
        option: action.help or ""
        for action in build_arg_parser()._actions
        for option in action.option_strings
    }
    for flag in LIMIT_FLAGS:
        assert f"  {flag}" in text
        assert len(helps[flag]) > 30, f"{flag} has no help text"
        assert " ".join(helps[flag].split()[:3]) in " ".join(text.split())


def test_limits_come_from_toml_env_and_flags(tmp_path: Path) -> None:
    toml = tmp_path / "bridge.toml"
    toml.write_text(
        'quote_provider = "simulated"\nmax_sessions = 50\nsend_timeout = 3.5\n'
        'trusted_proxies = ["10.0.0.0/8", "192.0.2.1"]\nproxy_protocol = true\n'
    )
    config = parse_args(
        ["--max-unfinished-streams", "4"],
        environ={"SHROUD_BRIDGE_CONFIG": str(toml), "SHROUD_BRIDGE_MAX_BUFFERED_BYTES": "99999999"},
    )
    assert (config.max_sessions, config.send_timeout, config.max_unfinished_streams) == (50, 3.5, 4)
    assert config.max_buffered_bytes == 99999999
    assert config.trusted_proxies == ("10.0.0.0/8", "192.0.2.1/32")
    assert config.proxy_protocol


def test_a_request_must_fit_a_session_and_a_session_a_source_and_a_source_the_budget() -> None:
    with pytest.raises(ConfigError, match="one whole request must fit"):
        _sim("--max-request-body", "10000000")  # above the default session share
    with pytest.raises(ConfigError, match="max_source_buffered_bytes <= max_buffered_bytes"):
        _sim("--max-buffered-bytes", "16777216")  # below the default source share
    config = _sim("--max-buffered-bytes", "67108864")
    assert config.max_source_buffered_bytes <= config.max_buffered_bytes


@pytest.mark.parametrize("entry", ["10.0.0.1/8", "not-an-address", "10.0.0.0/33"])
def test_malformed_trusted_proxy_is_rejected(entry: str) -> None:
    with pytest.raises(ConfigError, match="trusted_proxies"):
        _sim("--trusted-proxy", entry)


def test_proxy_protocol_needs_someone_trusted_to_send_it() -> None:
    with pytest.raises(ConfigError, match="proxy_protocol needs trusted_proxies"):
        _sim("--proxy-protocol")
