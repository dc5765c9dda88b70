"""Hub errors. Each carries the HTTP status the server answers with (adapterkit.errors.ServiceError),
and the client raises the same class again, so a refusal reads the same from a folder hub and a
server."""
from __future__ import annotations

from adapterkit.errors import ServiceError


class HubError(ServiceError):
    """A hub refused or could not complete a request."""

    status = 400


class InvalidName(HubError):
    """A repository, tag, version or file name is malformed (traversal, odd characters, too long)."""

    status = 400


class Unauthorized(HubError):
    """A write without a valid bearer token."""

    status = 401


class NotFound(HubError):
    """No such repository, tag, version or blob."""

    status = 404


class TooLarge(HubError):
    """An upload exceeds the hub's size limit."""

    status = 413


class UnsupportedFile(HubError):
    """A file type the hub never stores (pickles, binaries): only safetensors, JSON and text."""

    status = 415


class IntegrityError(HubError):
    """Content does not match its sha256 (or is not the format its name claims)."""

    status = 422


class Busy(HubError):
    """A repository stayed locked by another writer longer than the lock timeout."""

    status = 503


# a response without a class name (a framework's own 401/404/413/422) maps by status
ERRORS_BY_STATUS = {401: Unauthorized, 404: NotFound, 413: TooLarge, 415: UnsupportedFile, 422: IntegrityError,
                    503: Busy}
