"""The error every data source raises for input it cannot use."""


class SourceError(ValueError):
    """The data source's input is unusable (bad archive, missing file, bad parameter)."""
