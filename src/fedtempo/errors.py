"""Exceptions that carry a user-facing, one-line message.

The CLI prints ``str(error)`` for these and exits non-zero, without a traceback. Anything else that
escapes is a bug in fedtempo.
"""


class FedTempoError(Exception):
    """Base class of errors caused by the user's input (files, config values, data)."""


class ConfigError(FedTempoError):
    """A configuration value is missing, unknown or out of range; the message names its key path."""


class DataError(FedTempoError):
    """A data file is missing, corrupt or unusable; the message names the file."""


class PartitionError(FedTempoError):
    """A partition cannot be built from the given data and parameters."""
