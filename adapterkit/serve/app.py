"""The HTTP server over an Engine (FastAPI; `adapterkit serve` runs it under uvicorn).

Routes (OpenAPI schema at /openapi.json, docs at /docs):
  POST   /v1/predict            {"adapter": default, "inputs": ["text" | {"adapter", "text", "text_pair"}, ...]}
  GET    /v1/adapters           registered adapters (resident or not, task and labels once loaded)
  POST   /v1/adapters/{name}    {"ref": FOLDER | hub:REPO[:TAG] | BUNDLE#TASK}: load now   (token)
  DELETE /v1/adapters/{name}    unload                                                       (token)
  GET    /health                the process is up;  GET /ready: it takes predictions (503 while draining)
  GET    /metrics               Prometheus text format
Errors: 404 unknown adapter (named), 422 malformed body (the field) or an adapter that cannot be
loaded, 413 input too long when truncation is off, 503 + Retry-After when the queue is full or
the server drains, 401 load/unload without the token.
"""
from __future__ import annotations

import asyncio
import hmac
import time
from typing import Optional, Union

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from adapterkit.serve.engine import Engine
from adapterkit.serve.errors import ServeError, Unauthorized

MAX_INPUTS = 1024


class Input(BaseModel):
    adapter: Optional[str] = Field(None, description="Adapter for this input (default: the request's).")
    text: str
    text_pair: Optional[str] = Field(None, description="Second text of a pair task (e.g. MRPC, RTE).")


class PredictRequest(BaseModel):
    adapter: Optional[str] = Field(None, description="Default adapter of the inputs.")
    inputs: list[Union[str, Input]] = Field(..., min_length=1, max_length=MAX_INPUTS)


class LoadRequest(BaseModel):
    ref: Optional[str] = Field(None, description="Folder, hub:REPO[:TAG] or BUNDLE#TASK (default: the registered one).")


def create_app(engine: Engine, token: str | None = None, close_engine: bool = True) -> FastAPI:
    """The server app; on shutdown (after uvicorn has drained in-flight requests) the engine
    finishes its queue and stops."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        yield
        if close_engine:
            await run_in_threadpool(engine.close, True)

    app = FastAPI(title="adapterkit serve", version=_version(), lifespan=lifespan)
    metrics = engine.metrics

    @app.middleware("http")
    async def count(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "other")
        metrics.requests.labels(path, str(response.status_code)).inc()
        metrics.request_seconds.labels(path).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, e: ServeError):
        return e.response()

    @app.post("/v1/predict")
    async def predict(body: PredictRequest):
        items = []
        for i, item in enumerate(body.inputs):
            item = Input(text=item) if isinstance(item, str) else item
            adapter = item.adapter or body.adapter
            if adapter is None:
                return _field_error(["body", "inputs", i, "adapter"], "no adapter for this input and no default 'adapter'")
            items.append({"adapter": adapter, "text": item.text, "text_pair": item.text_pair})
        futures = await run_in_threadpool(engine.submit_many, items)  # tokenizes off the event loop
        results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        return {"predictions": results}

    @app.get("/v1/adapters")
    async def adapters():
        return {"adapters": engine.adapters(), "resident": len(engine.cache), "max_adapters": engine.config.max_adapters}

    @app.post("/v1/adapters/{name}")
    async def load(name: str, request: Request, body: Optional[LoadRequest] = None):
        _check_token(request, token)
        return await run_in_threadpool(engine.load, name, body.ref if body else None)

    @app.delete("/v1/adapters/{name}")
    async def unload(name: str, request: Request):
        _check_token(request, token)
        await run_in_threadpool(engine.unload, name)
        return {"unloaded": name}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        if not engine.ready:
            return JSONResponse({"ready": False}, status_code=503, headers={"Retry-After": "5"})
        return {"ready": True, "queue_depth": engine.queue_depth()}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return app


def _check_token(request: Request, token: str | None) -> None:
    if token is None:
        raise Unauthorized("loading and unloading are off: start the server with --token-file")
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise Unauthorized("missing or wrong token (send 'Authorization: Bearer <token>')")


def _field_error(loc: list, msg: str) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": loc, "msg": msg, "type": "missing"}]}, status_code=422)


def _version() -> str:
    from adapterkit import __version__

    return __version__
