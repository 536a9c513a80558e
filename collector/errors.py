"""The collector's few project exceptions; the CLI maps each to one clear message and exit code."""

from __future__ import annotations


class CollectorError(Exception):
    """Base class: anything the collector reports to a user without a traceback."""


class ConfigError(CollectorError):
    """A bad option: malformed daemon address, database URL, duration."""


class StoreError(CollectorError):
    """The database cannot be reached or used (went away, disk full, locked, bad URL).

    transient: retrying later may succeed (connection, disk, lock); False for errors the same
    statement will hit again (constraint, schema)."""

    def __init__(self, message: str, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class UnknownRunError(CollectorError):
    """A run id that the database does not hold."""
