"""The one exception type the command line turns into a clean one-line message."""


class GanforgeError(Exception):
    """A problem with the user's input: a bad value, path, file or run folder.

    The message is one sentence naming the bad value and what is expected. The command
    line prints it on stderr and exits with code 2, without a traceback.
    """
