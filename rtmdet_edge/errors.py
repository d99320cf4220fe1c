"""Errors a user can cause (bad path, wrong checkpoint, malformed data)."""


class UserError(Exception):
    """An error caused by user input; the CLI prints it as one line, no traceback."""
