"""One exception family with messages a user can act on.

The CLI maps every :class:`FrescoError` to exit code 2 and prints its message without a traceback.
"""


class FrescoError(Exception):
    """Base class of every error fresco-v2v raises on purpose."""


class InputError(FrescoError):
    """A user-supplied file (video, image, keyframe folder) is missing or unusable."""


class ConfigError(FrescoError, ValueError):
    """A configuration value is invalid; the message names the field, what was expected and what was given.

    ``shown``: the given value in words (``fresco_v2v.validation.describe``: "the string 'false'"); default its repr.
    """

    def __init__(self, field: str, expected: str, given: object, *, shown: str | None = None):
        self.field, self.expected, self.given = field, expected, given
        self.shown = repr(given) if shown is None else shown
        super().__init__(f"{field}: expected {expected}, got {self.shown}")


class WriteError(FrescoError):
    """A file of the run could not be written (full disk, read-only folder, no permission); the message names the
    file, the free space and what to do. Finished work is kept."""


class ModelNotFound(FrescoError):
    """Model weights could not be found or loaded; the message says what to pass instead."""


class OutOfMemory(FrescoError):
    """The device ran out of memory; the message gives the figures and what to lower."""


class Cancelled(FrescoError):
    """The user stopped the run (the web UI's Stop button, a ``should_stop`` callback). From ``translate_video`` the
    message says what was kept and how to go on from it."""
