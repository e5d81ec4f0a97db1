"""Exceptions the engine raises for problems a user can fix, one line each.

::

    OptsarError                 any problem the user can fix (the base: catch this one)
    ├── InputError              a layer, file, parameter or output path that cannot be used as given
    ├── CheckpointError         a checkpoint file that cannot be read or is not a valid OptSAR checkpoint
    ├── DependencyError         a Python package the operation needs is missing or broken
    │   └── MissingDependencyError
    └── Cancelled               the user stopped the run (no partial output is left)
        └── Terminated          the process got SIGTERM (see :func:`optsar_plugin.fileio.terminate_on_sigterm`)

Each class has a :attr:`~OptsarError.kind` (``"input"``, ``"checkpoint"``, ...) that front
ends (the Processing algorithms, the CLI, the engine worker) can report without
importing the classes.  Messages are one line: :class:`OptsarError` folds any line
breaks into spaces, so a message never turns into something that looks like a
traceback.  Any other exception is a bug.
"""


class OptsarError(Exception):
    """A problem the user can fix; the message says what and where, on one line."""

    kind = "error"

    def __init__(self, message: str = "", *args):
        super().__init__(" ".join(str(message).split()), *args)


class InputError(OptsarError):
    """A layer, file, parameter or output path that cannot be used as given (named in the message)."""

    kind = "input"


class CheckpointError(OptsarError):
    """A checkpoint that cannot be read, is corrupted, or does not follow the checkpoint schema."""

    kind = "checkpoint"


class DependencyError(OptsarError):
    """A Python package the requested operation needs cannot be imported."""

    kind = "dependency"


class MissingDependencyError(DependencyError):
    """A Python package the requested operation needs is not importable (the historical name)."""


class Cancelled(OptsarError):
    """The user cancelled the operation; no partial output was left behind."""

    kind = "cancelled"


class Terminated(Cancelled):
    """The process was asked to stop (SIGTERM); outputs were discarded as for a cancellation."""

    kind = "terminated"
