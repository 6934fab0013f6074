"""The library's run-time warnings, kept off the line of Keras' progress bar.

During `fit` with `verbose=1`, Keras' `ProgbarLogger` rewrites one line of
stdout after each batch (with `\\r`, no newline until the epoch ends). A Python
warning issued in the middle of an epoch (on stderr) would then be printed at
the end of that line. Keras' own mid-epoch messages (`ModelCheckpoint`,
`ReduceLROnPlateau`) start with a newline written through
`keras.src.utils.io_utils.print_msg` (stdout when interactive logging is on);
`warn` does the same before issuing a normal
`warnings.warn`, so the warning starts on a line of its own, the bar goes on
below it, and the warning stays a Python warning that users and tests can
filter or catch (`pytest.warns`, `warnings.catch_warnings`).
"""

from __future__ import annotations

import sys
import warnings

import keras

__all__ = ["progress_line", "warn"]

#: Whether Keras' progress bar is in the middle of a line (set by `progress_line`).
_line_open = False


def progress_line(is_open: bool) -> None:
    """Tell `warn` whether a progress bar line is open (the measuring callbacks do, batch by batch)."""
    global _line_open
    _line_open = bool(is_open)


def warn(message: str, category: type[Warning] = UserWarning, stacklevel: int = 1) -> None:
    """`warnings.warn(message, category)`, first ending an open progress bar line.

    The newline goes where Keras' `io_utils.print_msg` writes its messages
    and the bar: stdout, when interactive logging is on (with it off, Keras
    logs through `absl.logging`, no line is open and nothing is written).

    Args:
        message: The warning's text.
        category: The warning's class. Defaults to `UserWarning`.
        stacklevel: As for `warnings.warn`, counted from the caller of `warn`.
            Defaults to `1`.
    """
    if _line_open and keras.config.is_interactive_logging_enabled():
        sys.stdout.write("\n")
        sys.stdout.flush()
        progress_line(False)  # until the bar writes again
    warnings.warn(message, category, stacklevel=stacklevel + 1)
