"""The collector's few project exceptions; the CLI maps each to one clear message and exit code."""

from __future__ import annotations


class CollectorError(Exception):
    """Base class: anything the collector reports to a user without a traceback."""


class ConfigError(CollectorError):
    """A bad option: malformed daemon address, database URL, duration."""


class StoreError(CollectorError):
    """The database cannot be reached or used (went away, disk full, locked, bad URL).

    transient: retrying later may succeed (connection, disk, lock); False for errors the same
    statement will hit again (constraint, schema, a wrong role or database).
    data: the statement's rows are at fault (a value the column refuses), not the connection:
    the writer isolates such rows instead of retrying."""

    def __init__(self, message: str, transient: bool = True, data: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.data = data


class UnknownRunError(CollectorError):
    """A run id that the database does not hold."""
