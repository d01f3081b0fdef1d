"""Run every benchmark module: ``python -m benchmarks`` (what ``make bench`` calls).

Each ``benchmarks/<name>.py`` with a ``main()`` is run in name order; add a benchmark by
dropping a file in. Modules print their own labelled lines.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import benchmarks


def main() -> int:
    """Import and run each benchmark module's ``main()``; return a process exit status."""
    names = sorted(
        info.name
        for info in pkgutil.iter_modules(benchmarks.__path__)
        if not info.name.startswith("_")
    )
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        entry = getattr(module, "main", None)
        if not callable(entry):
            continue
        print(f"== benchmarks.{name}")
        entry()
    return 0


if __name__ == "__main__":
    sys.exit(main())
