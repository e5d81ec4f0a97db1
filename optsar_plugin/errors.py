"""Exceptions the engine raises for problems a user can fix.

The Processing algorithms turn :class:`OptsarError` into a
``QgsProcessingException`` and the CLI prints its message on one line; any
other exception is a bug.
"""


class OptsarError(Exception):
    """A problem with the user's input (a layer, a file, a parameter)."""


class MissingDependencyError(OptsarError):
    """A Python package the requested operation needs is not importable."""


class Cancelled(OptsarError):
    """The user cancelled the operation; no partial output was left behind."""
