"""Does ``pip install -e .`` beside each framework resolve to the framework's newest release?

For each openai major the Makefile tests (``openai<3`` and ``openai>=3``), and for each
framework docs/frameworks.md has a recipe for, ask pip's resolver (``--dry-run --report``, no
install) what it would pick, and compare with the newest release the index has. Prints one
line per pair and exits 1 if a framework would silently fall back to an older release where
docs/frameworks.md says it should not. Uses the network (the package index); not part of
``make test``, since a framework's next release may change the answer: run ``make
framework-resolution`` after upgrading, and update docs/frameworks.md with what it says.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = {
    "langchain-openai": "langchain-openai",
    "llama-index-llms-openai": "llama-index-llms-openai",
    "llama-index-llms-openai-like": "llama-index-llms-openai-like",
    "pydantic-ai-slim": "pydantic-ai-slim[openai]",
    "litellm": "litellm",
}
# Where docs/frameworks.md says the newest release cannot be had (its requirements exclude it).
EXPECTED_FALLBACKS = {
    ("openai>=3", "llama-index-llms-openai"),
    ("openai>=3", "llama-index-llms-openai-like"),
    ("openai<3", "pydantic-ai-slim"),
}


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own interpreter running pip)
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def newest(name: str) -> str:
    """The newest release the index offers for ``name``."""
    done = _pip("index", "versions", name)
    match = re.search(rf"^{re.escape(name)} \(([^)]+)\)", done.stdout, re.M)
    if match is None:
        raise SystemExit(f"pip index versions {name} failed:\n{done.stderr}")
    return match.group(1)


def resolved(openai: str, requirement: str) -> dict[str, str]:
    """Name -> version pip would install for ``-e . <requirement> <openai>``."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        done = _pip(
            "install",
            "--dry-run",
            "--quiet",
            "--ignore-installed",
            "--report",
            str(report),
            "-e",
            str(REPO_ROOT),
            requirement,
            openai,
        )
        if done.returncode != 0:
            return {"error": done.stderr.strip().splitlines()[-1]}
        installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installs}


def main() -> int:
    surprises = 0
    for openai in ("openai<3", "openai>=3"):
        for name, requirement in FRAMEWORKS.items():
            picked = resolved(openai, requirement)
            latest = newest(name)
            got = picked.get(name, picked.get("error", "?"))
            fell_back = got != latest
            expected = (openai, name) in EXPECTED_FALLBACKS
            verdict = "fallback, as documented" if fell_back and expected else "ok"
            if fell_back != expected:
                verdict = "UNEXPECTED: update docs/frameworks.md and the Makefile"
                surprises += 1
            print(
                f"{openai:10} {name:30} resolves {got:12} newest {latest:10} "
                f"openai {picked.get('openai', '?'):8} {verdict}"
            )
    return 1 if surprises else 0


if __name__ == "__main__":
    raise SystemExit(main())
