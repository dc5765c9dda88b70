"""The one error shape both servers answer with (adapterkit.errors.ServiceError) and how the
clients turn a response back into the class the server raised."""
import json

from adapterkit.errors import ServiceError
from adapterkit.hub import errors as hub_errors
from adapterkit.serve import errors as serve_errors


def test_response_carries_status_class_and_headers():
    busy = serve_errors.QueueFull("queue full").response()
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert json.loads(busy.body) == {"error": "QueueFull", "detail": "queue full"}
    denied = hub_errors.Unauthorized("no token").response()
    assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
    assert "retry-after" not in hub_errors.NotFound("x").response().headers


def test_from_response_prefers_the_named_class_then_the_status():
    closed = serve_errors.ServeError.from_response(503, {"error": "EngineClosed", "detail": "closing"}, "fallback",
                                                   serve_errors.BY_STATUS)
    assert type(closed) is serve_errors.EngineClosed and str(closed) == "closing" and closed.status == 503
    unknown = serve_errors.ServeError.from_response(404, {"detail": "Not Found"}, "fallback", serve_errors.BY_STATUS)
    assert type(unknown) is serve_errors.UnknownAdapter and str(unknown) == "Not Found"
    other = hub_errors.HubError.from_response(500, "not a dict", "HTTP 500", hub_errors.ERRORS_BY_STATUS)
    assert type(other) is hub_errors.HubError and str(other) == "HTTP 500"


def test_a_name_from_another_family_is_not_raised():
    # a hub client never raises the adapter server's classes, whatever the body names
    error = hub_errors.HubError.from_response(503, {"error": "QueueFull", "detail": "d"}, "f", hub_errors.ERRORS_BY_STATUS)
    assert type(error) is hub_errors.Busy
    assert issubclass(hub_errors.HubError, ServiceError) and issubclass(serve_errors.ServeError, ServiceError)
