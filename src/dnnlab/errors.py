"""The one error type users see.

Every mistake a user can make (a bad config key, a missing dataset, a corrupt file) raises
``DnnlabError`` with a message that names the problem and the fix. The CLI prints it as one line
and exits with code 2; the Python API lets it propagate.
"""


class DnnlabError(Exception):
    """A user-facing error: its message names the problem and how to fix it."""


class ConfigError(DnnlabError, ValueError):
    """A config key or value is wrong (raised before any work starts)."""


class DataError(DnnlabError):
    """A dataset is missing, corrupt or malformed."""


class TrainingDiverged(DnnlabError):
    """The loss became NaN or infinite; the last good weights were kept."""


class CheckpointError(DnnlabError):
    """A checkpoint file is missing, damaged, or not what the run needs (names, shapes)."""


class ResumeRefused(DnnlabError):
    """A resume was refused (another config, other data, nothing to resume): nothing changed."""
