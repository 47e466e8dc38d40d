"""The one base of every error a user can fix.

A :class:`UserError` — a bad spec, data.yaml, checkpoint, hyper-parameter file,
source, argument, or a target gelanc refuses to write — ends a command with one line
on stderr and exit status 2; every other exception is gelanc's own failure (exit 1).
Each module raises its own subclass (``DataError``, ``CheckpointError``, …) so that
callers of the library can tell them apart; the command line needs only this base.
:class:`gelanc.diagnostics.GelError` is the one that carries a source span.
"""


class UserError(Exception):
    """A failure of the input, not of gelanc: exit 2."""
