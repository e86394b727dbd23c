"""The one exception type for mistakes a user can make (bad config, bad file, bad budget).

The CLI catches `UserError` and prints its message as a single line with a non-zero exit, so every
message must say what to change, not where the code failed.
"""


class UserError(Exception):
    """A problem with the user's input that they can fix; the message names what to change."""
