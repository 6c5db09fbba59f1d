"""The one exception type that stages turn into a clean one-line error."""


class UserError(Exception):
    """Bad input or configuration: the message says what was wrong and how to fix it.

    Stage scripts print it as a single line and exit non-zero instead of a traceback.
    """
