"""``python -m bridge``: the same as the ``shroud-bridge`` console script."""

from bridge.cli import main

raise SystemExit(main())
