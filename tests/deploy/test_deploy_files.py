"""The shipped deployment files parse, and carry the values a deployment must get right.

No container engine or cluster runs here, so each file is checked by the parser or schema its
real consumer uses: the Dockerfile by BuildKit's own parser (``dockerfile``), the compose file
against the Compose Specification (``check-jsonschema``'s vendored schema), the Kubernetes
manifests against the Kubernetes API schemas (``kubernetes-validate``, strict). Then every
bridge configuration they hold is fed to the bridge's own configuration parser, so a value the
bridge would refuse fails here, and the cross-file rules are checked: the image is pulled by
the digest that is measured, the audience is the public host, the quote provider is hardware.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import dockerfile
import kubernetes_validate
import pytest
import yaml

from bridge.config import BridgeConfig, QuoteProviderKind, parse_args
from tests.bridgeproc import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE = REPO_ROOT / "deploy" / "compose" / "compose.yaml"
COMPOSE_ENV = REPO_ROOT / "deploy" / "compose" / "env.example"
KUBERNETES = REPO_ROOT / "deploy" / "kubernetes" / "shroud-bridge.yaml"
SYSTEMD = REPO_ROOT / "deploy" / "systemd" / "shroud-bridge.service"
NGINX = REPO_ROOT / "deploy" / "nginx" / "shroud-bridge.conf"
LOCK = REPO_ROOT / "requirements" / "bridge.lock"
BUILD_LOCK = REPO_ROOT / "requirements" / "build.lock"
DEPLOYMENT_DOC = REPO_ROOT / "docs" / "deployment.md"
KUBERNETES_VERSION = "1.33.0"

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_PINNED_IMAGE = re.compile(r"^[^@\s]+@(sha256:[0-9a-f]{64})$")
_VAR = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::\?[^}]*)?\}")


# --- Dockerfile -----------------------------------------------------------------------------


def _dockerfile() -> tuple[dockerfile.Command, ...]:
    commands: tuple[dockerfile.Command, ...] = dockerfile.parse_file(str(DOCKERFILE))
    return commands


def _stages(commands: tuple[dockerfile.Command, ...]) -> list[list[dockerfile.Command]]:
    stages: list[list[dockerfile.Command]] = []
    for command in commands:
        if command.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(command)
    return stages


def test_dockerfile_parses_and_every_base_is_pinned_by_digest() -> None:
    commands = _dockerfile()
    args = {
        c.value[0].split("=", 1)[0]: c.value[0].split("=", 1)[1]
        for c in commands
        if c.cmd == "ARG" and "=" in c.value[0]
    }
    bases = [c.value[0] for c in commands if c.cmd == "FROM"]
    assert len(bases) == 2
    for base in bases:
        resolved = _VAR.sub(
            lambda m: args[m.group(1)], base.replace("$BASE_IMAGE", "${BASE_IMAGE}")
        )
        assert _PINNED_IMAGE.match(resolved), f"base {base!r} -> {resolved!r} is not pinned"


def test_dockerfile_installs_only_hashed_locked_dependencies() -> None:
    runs = [" ".join(c.value) for c in _dockerfile() if c.cmd == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert any("--require-hashes" in r and "requirements/build.lock" in r for r in installs)
    assert any("--require-hashes" in r and "bridge.lock" in r for r in installs)
    # The one install without hashes is the wheel built in the first stage, with --no-index.
    unhashed = [r for r in installs if "--require-hashes" not in r]
    assert unhashed == ["pip install --no-deps --no-index /tmp/dist/*.whl && rm -rf /tmp/dist"]
    assert all("--no-deps" in r for r in installs)


def test_dockerfile_runtime_runs_unprivileged_and_the_image_digest_comes_at_deploy_time() -> None:
    runtime = _stages(_dockerfile())[-1]
    users = [c.value[0] for c in runtime if c.cmd == "USER"]
    assert users == ["10001:10001"]
    entrypoint = [c for c in runtime if c.cmd == "ENTRYPOINT"]
    assert len(entrypoint) == 1
    assert entrypoint[0].json
    assert entrypoint[0].value == ("shroud-bridge",)
    # The image cannot know its own digest: nothing in it may set one.
    text = DOCKERFILE.read_text()
    assert "IMAGE_DIGEST=" not in text
    assert "--image-digest " not in text
    # SOURCE_DATE_EPOCH reaches both stages (reproducible wheel, hash-checked .pyc files).
    assert all(
        any(c.cmd == "ARG" and "SOURCE_DATE_EPOCH" in c.value[0] for c in s)
        for s in _stages(_dockerfile())
    )


def test_dockerignore_keeps_the_build_context_to_what_the_dockerfile_copies() -> None:
    ignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") + 1 :][0].startswith("!")
    copied = {c.value[0] for c in _dockerfile() if c.cmd == "COPY" and not c.flags}
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for source in copied:
        assert source.rstrip("/") in allowed or Path(source).parent.as_posix() in allowed, source


# --- the lock files -----------------------------------------------------------------------------


def _locked(path: Path) -> dict[str, list[str]]:
    pins: dict[str, list[str]] = {}
    current = ""
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9._-]+)==(\S+) \\$", line):
            current = match.group(1).lower().replace("_", "-")
            pins[current] = []
        elif match := re.match(r"^\s+--hash=sha256:([0-9a-f]{64})", line):
            pins[current].append(match.group(1))
    return pins


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = _locked(LOCK)
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pins, f"{name} is not in {LOCK.name}: run make lock"
    assert pins
    assert all(hashes for hashes in pins.values())
    assert "setuptools" in _locked(BUILD_LOCK)


# --- compose ----------------------------------------------------------------------------------


def _env_example() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in COMPOSE_ENV.read_text().splitlines()
        if line and not line.startswith("#")
    )
    return dict(pairs)


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _VAR.sub(lambda m: env[m.group(1)], value)
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    return value


def _bridge_config(environment: dict[str, str], argv: list[str] | None = None) -> BridgeConfig:
    """What the bridge makes of this configuration (raises ConfigError if it refuses it)."""
    return parse_args(argv or [], environ=environment)


def test_compose_file_matches_the_compose_specification() -> None:
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_pulls_the_bridge_by_the_digest_it_measures() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())
    env = _env_example()
    compose = _interpolate(raw, env)
    bridge = compose["services"]["bridge"]
    pulled = _PINNED_IMAGE.match(bridge["image"])
    assert pulled is not None
    config = _bridge_config({k: str(v) for k, v in bridge["environment"].items()})
    assert config.image_digest == pulled.group(1) == env["SHROUD_BRIDGE_DIGEST"]
    assert config.quote_provider is QuoteProviderKind.CONFIGFS_TSM
    assert config.effective_audience == env["SHROUD_AUDIENCE"]
    assert config.upstream == "http://vllm:8000/v1"
    # nginx sits in front: without trusting it, every client would be one source.
    assert config.trusted_proxies == (f"{env['SHROUD_TRUSTED_PROXIES']}/32",)
    # One variable feeds both: the pulled and the measured digest cannot drift apart.
    assert raw["services"]["bridge"]["image"].endswith(
        "@${SHROUD_BRIDGE_DIGEST:?set SHROUD_BRIDGE_DIGEST}"
    )
    assert raw["services"]["bridge"]["environment"]["SHROUD_BRIDGE_IMAGE_DIGEST"].startswith(
        "${SHROUD_BRIDGE_DIGEST"
    )
    assert bridge["read_only"] is True
    assert not bridge["user"].startswith("0")
    assert _PINNED_IMAGE.match(compose["services"]["vllm"]["image"])
    assert "ports" not in compose["services"]["vllm"]  # vLLM is reachable from the bridge only
    mounts = {v["target"]: v["source"] for v in bridge["volumes"]}
    assert mounts["/run/shroud-bridge"] == "/run/shroud-bridge"  # the TD's tmpfs


# --- Kubernetes --------------------------------------------------------------------------------


def _manifests() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(KUBERNETES.read_text()) if d]


def test_kubernetes_manifests_match_the_api_schemas() -> None:
    kinds = []
    for document in _manifests():
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        kinds.append(document["kind"])
    assert kinds == ["Namespace", "DaemonSet", "Service", "NetworkPolicy", "Ingress"]


def test_kubernetes_schema_check_catches_a_misspelt_field() -> None:
    service = next(d for d in _manifests() if d["kind"] == "Service")
    service["spec"]["portz"] = service["spec"].pop("ports")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True)


def test_kubernetes_bridge_pulls_by_the_measured_digest_and_answers_to_the_ingress_host() -> None:
    documents = {d["kind"]: d for d in _manifests()}
    pod = documents["DaemonSet"]["spec"]["template"]["spec"]
    bridge = next(c for c in pod["containers"] if c["name"] == "bridge")
    environment = {e["name"]: e["value"] for e in bridge["env"] if "value" in e}
    config = _bridge_config(environment)
    pulled = _PINNED_IMAGE.match(bridge["image"])
    assert pulled is not None
    assert config.image_digest == pulled.group(1)
    assert config.quote_provider is QuoteProviderKind.CONFIGFS_TSM
    host = documents["Ingress"]["spec"]["rules"][0]["host"]
    assert config.effective_audience == f"{host}:443"  # what the SDK names for wss://HOST/
    assert host in documents["Ingress"]["spec"]["tls"][0]["hosts"]
    context = bridge["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["runAsNonRoot"] is True
    assert all(_PINNED_IMAGE.match(c["image"]) for c in pod["containers"])
    timeout = documents["Ingress"]["metadata"]["annotations"][
        "nginx.ingress.kubernetes.io/proxy-read-timeout"
    ]
    assert float(timeout) > config.ping_interval


def test_kubernetes_bridge_trusts_the_ingress_and_only_the_ingress_reaches_it() -> None:
    documents = {d["kind"]: d for d in _manifests()}
    pod = documents["DaemonSet"]["spec"]["template"]
    bridge = next(c for c in pod["spec"]["containers"] if c["name"] == "bridge")
    config = _bridge_config({e["name"]: e["value"] for e in bridge["env"] if "value" in e})
    # ingress-nginx names the client in X-Forwarded-For; the bridge believes it from the pods.
    assert config.trusted_proxies
    # ...and no pod but ingress-nginx's can reach the bridge to name a client of its own.
    policy = documents["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]
    port = next(p["containerPort"] for p in bridge["ports"] if p["name"] == "ws")
    assert rule["ports"] == [{"protocol": "TCP", "port": port}]


# --- systemd, nginx -------------------------------------------------------------------------


def _exec_start() -> list[str]:
    text = SYSTEMD.read_text().replace("\\\n", " ")
    line = next(x for x in text.splitlines() if x.startswith("ExecStart="))
    return line.removeprefix("ExecStart=").split()


def test_systemd_unit_is_a_bridge_command_line_the_bridge_accepts() -> None:
    sections = re.findall(r"^\[(\w+)\]$", SYSTEMD.read_text(), flags=re.MULTILINE)
    assert sections == ["Unit", "Service", "Install"]
    program, *argv = _exec_start()
    assert program.endswith("/shroud-bridge")
    config = _bridge_config({}, argv)
    assert config.quote_provider is QuoteProviderKind.CONFIGFS_TSM
    assert config.image_digest is not None
    assert _DIGEST.fullmatch(config.image_digest)
    assert config.effective_audience == "llm.example.com:443"
    assert config.trusted_proxies  # nginx in front names the clients
    assert "RuntimeDirectoryPreserve=yes" in SYSTEMD.read_text()


def test_nginx_site_times_out_idle_connections_only_well_after_the_bridge_pings() -> None:
    text = NGINX.read_text()
    timeout = re.search(r"proxy_read_timeout (\d+)s;", text)
    assert timeout is not None
    default_ping = BridgeConfig.model_fields["ping_interval"].default
    assert int(timeout.group(1)) >= 3 * default_ping
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in text


# --- the recipe names every file and command -------------------------------------------------


@pytest.mark.parametrize(
    "named",
    [
        "Dockerfile",
        "requirements/bridge.lock",
        "make lock",
        "make wheel",
        "SOURCE_DATE_EPOCH",
        "deploy/nginx/shroud-bridge.conf",
        "deploy/compose/compose.yaml",
        "deploy/compose/env.example",
        "deploy/kubernetes/shroud-bridge.yaml",
        "deploy/systemd/shroud-bridge.service",
        "shroud-attest policy init",
        "shroud-attest image-hash",
        "--image-digest",
        "--audience",
        "--ping-interval",
        "ssl_context",
        "SSL_CERT_FILE",
    ],
)
def test_deployment_recipe_names_it(named: str) -> None:
    assert named in DEPLOYMENT_DOC.read_text()
