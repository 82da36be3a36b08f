"""The one exception type the CLI turns into a one-line message and a non-zero exit code."""


class EdgekitError(Exception):
    """A problem the user can fix; the message names the problem and the fix, on one line."""

    exit_code = 2


class GateFailure(EdgekitError):
    """A parity or accuracy gate failed: the work ran, its result is not good enough."""

    exit_code = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI timeout, `kill`) raised where the work is, like Ctrl-C, so that cleanup runs."""

    exit_code = 143  # 128 + SIGTERM, what a shell reports for a process the signal ended
