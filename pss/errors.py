"""Error types raised at the boundaries of the engine (config, dataset, model build, run store, app input).

Every message says what went wrong *and what to do about it*. Catch ``PssError`` to handle all of them.
"""
from __future__ import annotations


class PssError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(PssError, ValueError):
    """A configuration value, preset or override is invalid (unknown key, wrong type, out of range)."""


class DatasetError(PssError):
    """A dataset folder, list file, image or mask is missing or malformed."""


class ModelError(PssError):
    """A model cannot be built or its weights cannot be loaded."""


class CheckpointError(PssError):
    """A checkpoint is missing, corrupt or from an incompatible format."""


class RunStoreError(PssError):
    """The run store (run directories + SQLite index) is missing, corrupt or from another format."""
