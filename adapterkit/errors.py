"""Errors a user can cause. The CLI prints these as one line and exits non-zero."""


class AdapterkitError(Exception):
    """Base class for user-facing errors (bad input, missing file, incompatible model)."""


class IncompatibleAdapterError(AdapterkitError):
    """A saved adapter does not fit the model it is loaded into."""


class PlacementError(AdapterkitError):
    """Adapter sites could not be found in a model."""


class ServiceError(AdapterkitError):
    """An error a server answers with: HTTP `status`, the body {"error": class name, "detail":
    message}, and `Retry-After` / `WWW-Authenticate` where they apply. The hub's errors
    (adapterkit.hub.errors) and the adapter server's (adapterkit.serve.errors) derive from it, and
    each client raises the class the server named (`from_response`), so a refusal reads the same on
    both sides of the wire."""

    status = 500
    retry_after: int | None = None

    def payload(self) -> dict:
        return {"error": type(self).__name__, "detail": str(self)}

    def headers(self) -> dict[str, str] | None:
        if self.status == 401:
            return {"WWW-Authenticate": "Bearer"}
        if self.retry_after is not None:
            return {"Retry-After": str(self.retry_after)}
        return None

    def response(self):
        """This error as a starlette JSONResponse (only the servers import starlette)."""
        from starlette.responses import JSONResponse

        return JSONResponse(self.payload(), self.status, headers=self.headers())

    @classmethod
    def from_response(cls, status: int, body, fallback: str, by_status: dict | None = None) -> "ServiceError":
        """The error a client raises for an error response: the subclass of `cls` the body names,
        else `by_status[status]`, else `cls`; the message is the body's detail, else `fallback`."""
        body = body if isinstance(body, dict) else {}
        named = {c.__name__: c for c in _subclasses(cls)}.get(body.get("error"))
        error_cls = named or (by_status or {}).get(status, cls)
        detail = body.get("detail")
        error = error_cls.__new__(error_cls)  # subclasses may take other arguments (UnknownAdapter)
        AdapterkitError.__init__(error, detail if isinstance(detail, str) else fallback)
        error.status = status
        return error


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found
