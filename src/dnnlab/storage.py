"""Database URLs shared by ``dnnlab tune`` and ``dnnlab sweep --storage``: the driver to use and
a form fit for messages (no password)."""

from __future__ import annotations

import importlib.util


def with_driver(url: str) -> str:
    """``postgresql://`` with an installed driver named: SQLAlchemy 2.1 assumes psycopg 3, and
    many machines have only psycopg2 (``psycopg2-binary``), so the one that is importable wins."""
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and sep:
        for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
            if importlib.util.find_spec(module) is not None:
                return f"postgresql+{driver}://{rest}"
    return url


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':')[0]}:***@{host}"
    return url
