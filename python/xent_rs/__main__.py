"""``python -m xent_rs``: the ``xent-rs`` command line (see :mod:`xent_rs.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
