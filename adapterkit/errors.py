"""Errors a user can cause. The CLI prints these as one line and exits non-zero."""


class AdapterkitError(Exception):
    """Base class for user-facing errors (bad input, missing file, incompatible model)."""


class IncompatibleAdapterError(AdapterkitError):
    """A saved adapter does not fit the model it is loaded into."""


class PlacementError(AdapterkitError):
    """Adapter sites could not be found in a model."""
