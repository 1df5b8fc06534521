"""The one exception family the CLI turns into a single clean line and exit code 2.

Lives apart from everything heavy so `trainer`, `imbtui.store` and the CLI can all share it.
"""


class UserError(Exception):
    """Bad input from the user (arguments, paths, names, SQL): one line, exit code 2."""
