"""The few exceptions the daemon raises; vendor errors are translated into these at the edge."""


class DaemonError(Exception):
    """Base class: a user-facing problem with one clear message."""


class ConfigError(DaemonError):
    """A bad option or an address that cannot be bound."""


class BackendUnavailable(DaemonError):
    """The requested measurement source is not there (no NVML, no GPU, no powercap)."""


class InvalidMarker(DaemonError):
    """A marker in an intake batch is malformed; the whole batch is rejected."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"marker {index}: {reason}")
        self.index = index
        self.reason = reason


class SubscribeError(DaemonError):
    """A subscription asks for a position that cannot exist in this boot."""
