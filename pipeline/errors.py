"""Errors that are the user's to fix: printed as one line, exit code 2, no traceback."""


class UserError(Exception):
    """A mistake the user can fix (bad parameter, missing file, unreachable URL)."""


class ConfigError(UserError):
    """An invalid or unknown key or value in the parameters file."""
