"""The trainer's few project exceptions; the CLI turns them into one clear message."""


class TrainerError(Exception):
    """A run cannot start or continue; the message says why (shown to the user as is)."""


class ConfigError(TrainerError):
    """Flags that contradict each other or the world size (a user mistake: exit 2)."""


class DataError(TrainerError):
    """The data set is missing, malformed or too small for the batch sizes asked for."""


class CheckpointError(TrainerError):
    """A checkpoint is missing, unreadable or does not match the run being resumed."""
