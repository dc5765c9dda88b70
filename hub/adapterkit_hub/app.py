"""The hub server: a FastAPI application over one `FolderStore` (protocol in hub/README.md).

Reads are open. Writes need `Authorization: Bearer <token>` matching a line of the token file;
without a token file the server is read-only. Every store error becomes its class's HTTP status
with {"error": <class name>, "detail": <message>}, which the client turns back into the class.
"""
from __future__ import annotations

import hmac
from pathlib import Path

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from adapterkit.hub.errors import HubError, NotFound, TooLarge, Unauthorized
from adapterkit.hub.files import FileEntry
from adapterkit.hub.refs import Ref, check_part, check_repo
from adapterkit.hub.store import DEFAULT_MAX_FILE_BYTES, FolderStore

MAX_JSON_BODY = 1 << 20  # requests other than file uploads carry small JSON


class BlobResponse(FileResponse):
    chunk_size = 1 << 20  # Starlette's 64 KiB chunks cost ~2x throughput on large blobs


class LimitJsonBodies:
    """ASGI middleware: on every route but file uploads, read the (small JSON) body up to
    MAX_JSON_BODY bytes and refuse more with 413, so no request makes the server buffer a large
    body, with or without a Content-Length."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith("/api/v1/uploads/"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        body, whole = b"", not length.isdigit() or int(length) <= MAX_JSON_BODY
        while whole:
            message = await receive()
            body += message.get("body", b"")
            whole = len(body) <= MAX_JSON_BODY
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        if not whole:
            response = TooLarge(f"request body over {MAX_JSON_BODY:,} bytes").response()
            return await response(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, replay, send)


class AuthenticateWrites:
    """ASGI middleware: a write (any method but GET/HEAD) without a valid token gets 401 before
    its body is read or validated, so an unauthenticated client learns nothing from a 422."""

    def __init__(self, app, check):
        self.app, self.check = app, check

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD"):
            auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            try:
                self.check(auth)
            except Unauthorized as exc:
                return await exc.response()(scope, receive, send)
        await self.app(scope, receive, send)


class CommitBody(BaseModel):
    upload: str
    files: list[dict]
    tags: list[str] = []


class TagBody(BaseModel):
    version: str


def read_tokens(token_file: str | Path) -> list[str]:
    """Tokens from a file, one a line; blank lines and `#` comments are ignored."""
    from adapterkit.io.files import FileFormatError, read_text

    try:
        lines = read_text(token_file, "a token file", max_bytes=1 << 20).splitlines()
    except FileFormatError as e:
        raise HubError(str(e)) from None
    tokens = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not tokens:
        raise HubError(f"token file {token_file} holds no token")
    return tokens


def create_app(root: str | Path, tokens: list[str] | None = None,
               max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> FastAPI:
    store = FolderStore(root, max_file_bytes=max_file_bytes, label="this hub server")
    store.check_root(create=True)  # refuse a foreign folder at start, not at the first request
    app = FastAPI(title="adapterkit hub", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    app.add_middleware(LimitJsonBodies)

    @app.exception_handler(HubError)
    async def hub_error(request: Request, exc: HubError) -> JSONResponse:
        return exc.response()

    def writer(authorization: str | None = Header(default=None)) -> None:  # also a dependency of each write route
        if not tokens:
            raise Unauthorized("this hub is read-only (the server was started without --token-file)")
        scheme, _, given = (authorization or "").partition(" ")
        ok = scheme.lower() == "bearer" and any(hmac.compare_digest(given.encode(), t.encode()) for t in tokens)
        if not ok:
            raise Unauthorized("missing or invalid token: writes need `Authorization: Bearer <token>`")

    app.add_middleware(AuthenticateWrites, check=writer)  # outermost: runs before the body limit

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default answer echoes the input, which fails for NaN (a 500): name the fields only
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
                             for e in exc.errors()[:10])
        return JSONResponse({"error": "InvalidRequest", "detail": f"invalid request: {problems}"[:2000]}, 422)

    @app.exception_handler(RecursionError)
    async def too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        return HubError("request JSON nested too deeply").response()

    _read_routes(app, store, max_file_bytes, writable=bool(tokens))
    _write_routes(app, store, Depends(writer))
    return app


def _repo(ns: str, name: str) -> str:
    return check_repo(f"{ns}/{name}")


def _read_routes(app: FastAPI, store: FolderStore, max_file_bytes: int, writable: bool) -> None:
    @app.get("/api/v1/info")
    def info() -> dict:
        from adapterkit import __version__

        return {"format": "adapterkit.hub", "adapterkit_version": __version__,
                "max_file_bytes": max_file_bytes, "writable": writable}

    @app.get("/api/v1/repos")
    def list_repos(pattern: str | None = None) -> list:
        return store.list_repos(pattern)

    @app.get("/api/v1/repos/{ns}/{name}")
    def repo_info(ns: str, name: str) -> dict:
        return store.repo_info(_repo(ns, name))

    @app.get("/api/v1/repos/{ns}/{name}/tags")
    def tags(ns: str, name: str) -> dict:
        return store.tags(_repo(ns, name))

    @app.get("/api/v1/repos/{ns}/{name}/tags/{tag}")
    def resolve_tag(ns: str, name: str, tag: str) -> dict:
        return {"version": store.resolve(Ref(_repo(ns, name), tag=check_part(tag, "tag")))}

    @app.get("/api/v1/repos/{ns}/{name}/versions/{version}")
    def card(ns: str, name: str, version: str) -> dict:
        return store.card(_repo(ns, name), version)

    @app.api_route("/api/v1/blobs/{sha256}", methods=["GET", "HEAD"])
    def blob(sha256: str) -> FileResponse:
        path = store.blob_path(sha256)
        if not path.is_file():
            raise NotFound(f"no blob {sha256}")
        return BlobResponse(path, media_type="application/octet-stream",
                            headers={"Cache-Control": "public, max-age=31536000, immutable"})


def _write_routes(app: FastAPI, store: FolderStore, auth) -> None:
    @app.post("/api/v1/uploads", dependencies=[auth])
    def begin_upload() -> dict:
        return {"upload": store.begin_upload()}

    @app.put("/api/v1/uploads/{upload}/{sha256}", dependencies=[auth])
    async def put_blob(upload: str, sha256: str, request: Request) -> Response:
        length = request.headers.get("content-length")
        declared = int(length) if length and length.isdigit() else None
        writer = store.blob_writer(upload, sha256, declared)  # 413 here, before reading the body
        try:
            with writer:
                async for chunk in request.stream():
                    writer.write(chunk)
                writer.finish()
        except ClientDisconnect:  # the client went away mid-upload: the partial file is gone
            return Response(status_code=400)
        return JSONResponse({"sha256": sha256, "size": writer.size}, 201)

    @app.delete("/api/v1/uploads/{upload}", dependencies=[auth])
    def abort_upload(upload: str) -> dict:
        store.abort_upload(upload)
        return {"aborted": upload}

    @app.post("/api/v1/repos/{ns}/{name}/versions", dependencies=[auth])
    def commit(ns: str, name: str, body: CommitBody) -> JSONResponse:
        entries = [FileEntry.from_dict(f) for f in body.files]
        return JSONResponse(store.commit(body.upload, _repo(ns, name), entries, body.tags), 201)

    @app.put("/api/v1/repos/{ns}/{name}/tags/{tag}", dependencies=[auth])
    def set_tag(ns: str, name: str, tag: str, body: TagBody) -> dict:
        return {"version": store.set_tag(_repo(ns, name), tag, body.version)}

    @app.delete("/api/v1/repos/{ns}/{name}/tags/{tag}", dependencies=[auth])
    def delete_tag(ns: str, name: str, tag: str) -> dict:
        store.delete_tag(_repo(ns, name), tag)
        return {"deleted": tag}
