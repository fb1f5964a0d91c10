"""docs/config_keys.md, generated from the key table: ``python -m dnnlab.keysdoc`` rewrites it.

The page is :func:`text` (a header and ``describe_keys(detail=True)``), so it cannot say anything
the table (:data:`dnnlab.config.KEYS`) does not; ``tests/test_config_keys.py`` fails when the
file in the checkout differs from it, naming this command.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dnnlab.cli_common import KEYS_DOC  # relative to the checkout's root
from dnnlab.config import describe_keys

COMMAND = "python -m dnnlab.keysdoc"    # what regenerates it (run from the checkout's root)


def text() -> str:
    """The whole page."""
    return ("# Config keys\n\n"
            "Every key of a run config: `name = default; allowed values: what it does`. Generated from\n"
            "the table in `src/dnnlab/config.py` (`describe_keys(detail=True)`) by\n"
            f"`{COMMAND}`; `tests/test_config_keys.py` keeps this file equal to it.\n\n"
            "```\n" + describe_keys(detail=True) + "\n```\n")


def main(argv: list[str] | None = None) -> int:
    """Write :func:`text` to ``argv[0]`` (default ``docs/config_keys.md``)."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else KEYS_DOC)
    path.write_text(text(), encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
