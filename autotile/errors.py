"""The one exception type users see for mistakes they can fix (bad shapes, dtypes, options).

Raised early, at the boundary (ir validation, CLI parsing), with a message naming the bad value.
"""


class AutotileError(ValueError):
    """A user-facing error: the message names the bad value and what was expected."""
