"""The one exception type for mistakes a user can make (bad text, audio, path or config)."""


class UniMoEError(Exception):
    """A user-facing error: the message says what was wrong and what to do.

    The CLI prints it without a traceback and exits with status 2.
    """
