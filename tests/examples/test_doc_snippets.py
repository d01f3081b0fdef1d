"""The README and every document under docs/ say only what the code does.

- Every ```python block runs, as a reader would run it, in a fresh interpreter against a real
  simulated bridge: ``SHROUD_BRIDGE_URL``, ``SHROUD_API_KEY`` and ``SHROUD_POLICY`` point at
  it, and the working directory holds its development policy as ``policy.toml``. A block
  needing a framework this venv lacks is skipped here, naming the package (`make test` runs
  every venv, so each block runs in one of them). A block preceded by
  ``<!-- snippet: fragment -->`` is an excerpt with undefined names: it must compile, and every
  name it imports from our packages must exist.
- Every ```sh block names only what exists: make targets, example files, and the subcommands
  and flags of ``shroud-attest`` and ``shroud-bridge``.
- Every claim "`shroud_sdk.X` (an `openai.Y`)" or "(a subclass of `openai.Y`)" holds.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

import shroud_sdk
from tests.bridgeproc import BridgeProcess, running_bridge
from tests.vectors import REPO_ROOT

DOCUMENTS = (REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")))
FRAGMENT = "<!-- snippet: fragment -->"
OUR_PACKAGES = ("shroud_sdk", "attestation", "bridge")
API_KEY = "doc-snippets-key-0123456789"
# Frameworks a snippet may need, by import name, and the package that provides each.
OPTIONAL = {
    "langchain_openai": "langchain-openai",
    "llama_index": "llama-index-llms-openai-like",
    "pydantic_ai": "pydantic-ai-slim[openai]",
    "litellm": "litellm",
}
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int
    language: str
    code: str
    fragment: bool

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def _snippets() -> list[Snippet]:
    found = []
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            before = text[: match.start()].rstrip().rsplit("\n", 1)[-1]
            found.append(
                Snippet(
                    path,
                    text.count("\n", 0, match.start()) + 1,
                    match.group(1),
                    match.group(2),
                    before.strip() == FRAGMENT,
                )
            )
    return found


SNIPPETS = _snippets()
PYTHON = [s for s in SNIPPETS if s.language == "python"]
SHELL = [s for s in SNIPPETS if s.language in {"sh", "bash", "console"}]


def _imports(code: str) -> list[tuple[str, list[str]]]:
    """(module, names) for every import statement in ``code``."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    with running_bridge(
        tmp_path_factory.mktemp("doc-bridge"), env={"SHROUD_BRIDGE_API_KEYS": API_KEY}
    ) as process:
        yield process


def test_the_documents_have_snippets_to_check() -> None:
    assert len(PYTHON) >= 10
    assert any(s.path.name == "README.md" for s in PYTHON)
    assert any(s.path.name == "frameworks.md" for s in PYTHON)


@pytest.mark.parametrize("snippet", PYTHON, ids=[s.id for s in PYTHON])
def test_python_snippet(snippet: Snippet, bridge: BridgeProcess, tmp_path: Path) -> None:
    for module, names in _imports(snippet.code):
        top = module.split(".")[0]
        if top in OPTIONAL and importlib.util.find_spec(top) is None:
            pytest.skip(f"{OPTIONAL[top]} is not installed in this venv (another one runs it)")
        if top in OUR_PACKAGES:
            imported = importlib.import_module(module)
            missing = [n for n in names if not hasattr(imported, n)]
            assert not missing, f"{snippet.id}: {module} has no {missing}"
    if snippet.fragment:
        compile(snippet.code, snippet.id, "exec")
        return
    shutil.copy(bridge.policy_path, tmp_path / "policy.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHROUD_", "OPENAI_"))}
    env |= {
        "PYTHONPATH": str(REPO_ROOT),
        "SHROUD_BRIDGE_URL": bridge.url,
        "SHROUD_API_KEY": API_KEY,
        "SHROUD_POLICY": str(tmp_path / "policy.toml"),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    done = subprocess.run(
        [sys.executable, "-c", snippet.code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{snippet.id} failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, f"{snippet.id}:\n{done.stderr}"


def _help(program: str, *subcommand: str) -> str:
    module = {"shroud-attest": "attestation.cli", "shroud-bridge": "bridge"}[program]
    done = subprocess.run(
        [sys.executable, "-m", module, *subcommand, "--help"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _check_command(words: list[str], where: str) -> None:
    program = Path(words[0]).name
    if program == "make":
        targets = re.findall(r"^([\w-]+):", (REPO_ROOT / "Makefile").read_text(), re.M)
        assert all(t in targets for t in words[1:] if not t.startswith("-")), where
    elif program in {"python", "python3"}:
        assert (REPO_ROOT / words[1]).is_file(), f"{where}: no {words[1]}"
    elif words[0].startswith("examples/"):
        assert (REPO_ROOT / words[0]).is_file(), f"{where}: no {words[0]}"
    elif program in {"shroud-attest", "shroud-bridge"}:
        subcommand = [w for w in words[1:2] if not w.startswith("-")]
        text = _help(program, *subcommand)
        for flag in (w.split("=", 1)[0] for w in words[1:] if w.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (
                f"{where}: {program} {' '.join(subcommand)} has no {flag}"
            )
    elif program != "export":
        raise AssertionError(f"{where}: the checker does not know {program!r}; teach it")


@pytest.mark.parametrize("snippet", SHELL, ids=[s.id for s in SHELL])
def test_shell_snippet_names_only_what_exists(snippet: Snippet) -> None:
    for number, line in enumerate(snippet.code.splitlines()):
        command = line.split(" #", 1)[0].strip()
        if command and not command.startswith("#"):
            _check_command(shlex.split(command), f"{snippet.id}+{number}")


_CLAIM = re.compile(r"`(?:shroud_sdk\.)?(\w+)`\s*\((?:an?|a subclass of)\s+`openai\.(\w+)`", re.S)


def test_documented_error_classes_are_what_they_claim() -> None:
    checked = 0
    for path in DOCUMENTS:
        for ours, theirs in _CLAIM.findall(path.read_text(encoding="utf-8")):
            cls = getattr(shroud_sdk, ours)
            assert issubclass(cls, getattr(openai, theirs)), f"{path.name}: {ours} vs {theirs}"
            checked += 1
    assert checked >= 5
