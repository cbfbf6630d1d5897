"""One exception type for every mistake a user can fix: bad names, keys, shapes, data or config.

The CLI prints ``error: <message>`` for these and exits with status 2, so every message must be one
line that says what was wrong and what to do.
"""


class MMSSLError(Exception):
    """A user-fixable error with a one-line, actionable message."""


class ConfigError(MMSSLError, ValueError):
    """An unknown or ill-typed config key, registry name or keyword argument."""


class DataError(MMSSLError, ValueError):
    """Empty, corrupt or ill-shaped data."""


class ShapeError(MMSSLError, ValueError):
    """A tensor whose shape does not fit what a module expects."""


class NonFiniteError(MMSSLError):
    """A NaN or Inf loss, gradient, observation, reward or weight; the message names where it came from."""
