"""Errors the serving engine raises; each carries the HTTP status the server answers with
(adapterkit.errors.ServiceError)."""
from __future__ import annotations

from adapterkit.errors import ServiceError


class ServeError(ServiceError):
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


class Unauthorized(ServeError):
    """Loading or unloading without the server's token."""

    status = 401


class QueueFull(ServeError):
    status = 503
    retry_after = 1


class EngineClosed(ServeError):
    status = 503
    retry_after = 5


# a response without a class name (a framework's own 404/413) maps by status
BY_STATUS = {404: UnknownAdapter, 413: InputTooLong, 503: QueueFull}
