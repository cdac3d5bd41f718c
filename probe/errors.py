"""The one error the probe reports: a message for stderr and the exit code that goes with it."""

from __future__ import annotations

__all__ = ["FAILED", "USAGE", "ProbeError"]

USAGE = 2  # bad flags, config, prompt or files: nothing was sent
FAILED = 1  # the backend refused or could not be reached, or an output could not be written


class ProbeError(Exception):
    """A message for stderr (one line, no traceback) and the exit code: USAGE or FAILED."""

    def __init__(self, message: str, exit_code: int = USAGE):
        super().__init__(message)
        self.exit_code = exit_code
