"""The one exception type the command line turns into a clean one-line message."""


def cut(text: str, limit: int = 200) -> str:
    """`text` cut to `limit` characters, so a message never echoes an unbounded input in full."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def first_line(err: BaseException, limit: int = 200) -> str:
    """An exception's first line of message, cut to `limit` characters (its type's name when it has none)."""
    text = str(err).strip()
    return cut(text.splitlines()[0], limit) if text else type(err).__name__


class GanforgeError(Exception):
    """A problem with the user's input: a bad value, path, file or run folder.

    The message is one sentence naming the bad value and what is expected. The command
    line prints it on stderr and exits with `exit_code`, without a traceback.
    """

    exit_code = 2


class DistributedFailure(GanforgeError):
    """Another process of a torchrun job died or stopped answering; the last checkpoint is kept."""

    exit_code = 4


class TrainingDiverged(GanforgeError):
    """Training produced NaN/Inf beyond the divergence guard's limit; the last good checkpoint is kept."""

    exit_code = 3
