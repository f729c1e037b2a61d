"""The one exception type for mistakes the user can fix: the CLI prints it as one line, exit 2."""


class UserError(Exception):
    """Bad input (flag, config, data, symbol, path): the message names what, where and how to fix it."""
