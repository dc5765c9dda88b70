"""Errors the serving engine raises; each carries the HTTP status the server answers with."""
from __future__ import annotations

from adapterkit.errors import AdapterkitError


class ServeError(AdapterkitError):
    status = 500


class UnknownAdapter(ServeError):
    status = 404

    def __init__(self, name: str, why: str = "no adapter named") -> None:
        super().__init__(f"{why} {name!r}")
        self.name = name


class AdapterLoadError(ServeError):
    """The adapter's files are corrupt, or it was built for another backbone."""

    status = 422


class InputTooLong(ServeError):
    status = 413


class QueueFull(ServeError):
    status = 503
    retry_after = 1


class EngineClosed(ServeError):
    status = 503
    retry_after = 5
