"""Installed package versions, for runs to record and `kasmina --version` to print.

A module of its own so that asking for a version loads nothing of the
ledger: `--version` then starts without SQLAlchemy.
"""

from __future__ import annotations


def package_version(name: str) -> str | None:
    """The installed version of `name`, or None where it is not installed."""
    from importlib import metadata  # not at start: a command that writes no run never asks

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
