"""The dataset's error type, in a module of its own so that reporting it imports nothing heavy."""


class DatasetError(RuntimeError):
    """A dataset that is missing, unfinished, or fails its integrity check."""
