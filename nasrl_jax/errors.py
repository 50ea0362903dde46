"""The one exception type for user mistakes (bad data, bad config).

`launch.py` turns it into a single line on stderr and exit code 2, without a traceback.
Library code raises it *before* any long work starts and before any output is written.
"""


class UserInputError(ValueError):
  """Bad input from the user: the message names the file/row/field and what is wrong."""
