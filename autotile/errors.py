"""The one exception type users see for mistakes they can fix (bad shapes, dtypes, options).

Raised early, at the boundary (ir validation, CLI parsing), with a message naming the bad value.
"""


class AutotileError(ValueError):
    """A user-facing error: the message names the bad value and what was expected."""


# Kernel defects: what a candidate kernel did wrong. Raised inside build and run workers, where the measurer
# turns them into a failed measurement of the matching kind; they are never a user's mistake.

class KernelDefect(Exception):
    """A candidate kernel failed; its subclass says how."""


class WrongResult(KernelDefect, AssertionError):
    """The kernel ran and its output disagrees with the reference."""


class Unsupported(KernelDefect):
    """The config compiles but cannot run on this device (shared memory, registers, an instruction it lacks)."""


class KernelBuildError(KernelDefect):
    """A kernel asked for outside tuning could not be built, or failed its first verification; the message
    carries the compiler's or the reference check's reason."""
