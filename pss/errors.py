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


def explain_os_error(exc: OSError) -> str:
    """``exc`` as one line that names the file and says what to do (the OS's own text gives no advice).

    Used wherever an OS error reaches a person (the CLI, the app's status line), so both say the same thing.
    """
    import errno

    where = f" ({exc.filename})" if exc.filename else ""
    reason = exc.strerror or str(exc)
    advice = {
        errno.EACCES: "this process may not write or read there: fix the permissions (chmod/chown) or use another "
                      "workspace",
        errno.EPERM: "the file or folder is protected (read-only mount, immutable flag from chattr +i, or another "
                     "owner): make it writable again or use another workspace",
        errno.EROFS: "the file system is mounted read-only: remount it read-write or use another workspace",
        errno.ENOSPC: "the disk is full: free some space (old runs: pss runs --delete RUN) and try again",
        errno.ENOENT: "it does not exist (any more): check the path, or refresh the page if it was just removed",
    }.get(exc.errno or -1, "check the file and its folder, then try again")
    return f"{reason}{where}: {advice}"
