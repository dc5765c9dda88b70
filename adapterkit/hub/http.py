"""A hub server seen from a client: the same methods as `FolderStore`, over HTTP (httpx).

The server (hub/adapterkit_hub) answers errors as {"error": <HubError subclass>, "detail": ...}
with the class's HTTP status; this client raises the same class with the same message, so
callers cannot tell a folder hub from a server by its errors. The wire protocol is listed in
hub/README.md.
"""
from __future__ import annotations

from typing import Iterable, Iterator
from urllib.parse import quote

from adapterkit.hub.errors import ERRORS_BY_STATUS, HubError, TooLarge
from adapterkit.hub.files import CHUNK, FileEntry
from adapterkit.hub.refs import Ref, check_repo, check_sha256

API = "/api/v1"


class HttpStore:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0):
        import httpx

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._httpx = httpx
        plain = self.url.startswith("http://")  # no TLS: skip loading CA certificates (~100 ms a client)
        self._client = httpx.Client(base_url=self.url + API, headers=headers, timeout=timeout,
                                    trust_env=False, follow_redirects=False, verify=not plain)
        self._info: dict | None = None

    def __repr__(self) -> str:
        return f"HttpStore({self.url!r})"

    def describe(self) -> str:
        return f"hub {self.url}"

    def close(self) -> None:
        self._client.close()

    # -- plumbing -------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs):
        try:
            response = self._client.request(method, path, **kwargs)
        except self._httpx.HTTPError as e:
            raise HubError(f"cannot reach hub at {self.url}: {e}") from None
        _raise_for(response)
        return response

    def info(self) -> dict:
        if self._info is None:
            self._info = self._request("GET", "/info").json()
        return self._info

    # -- reads --------------------------------------------------------------------------
    def tags(self, repo: str) -> dict[str, str]:
        return self._request("GET", f"/repos/{check_repo(repo)}/tags").json()

    def resolve(self, ref: Ref) -> str:
        if ref.version:
            return self.card(ref.repo, ref.version)["version"]
        return self._request("GET", f"/repos/{ref.repo}/tags/{ref.tag}").json()["version"]

    def card(self, repo: str, version: str) -> dict:
        return self._request("GET", f"/repos/{check_repo(repo)}/versions/{version}").json()

    def repo_info(self, repo: str) -> dict:
        return self._request("GET", f"/repos/{check_repo(repo)}").json()

    def list_repos(self, pattern: str | None = None) -> list[dict]:
        params = {"pattern": pattern} if pattern else {}
        return self._request("GET", "/repos", params=params).json()

    def has_blob(self, sha256: str) -> bool:
        try:
            response = self._client.head(f"/blobs/{check_sha256(sha256)}")
        except self._httpx.HTTPError as e:
            raise HubError(f"cannot reach hub at {self.url}: {e}") from None
        return response.status_code == 200

    def read_blob(self, sha256: str) -> Iterator[bytes]:
        try:
            with self._client.stream("GET", f"/blobs/{check_sha256(sha256)}") as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response)
                yield from response.iter_bytes(CHUNK)
        except self._httpx.HTTPError as e:
            raise HubError(f"download from {self.url} failed: {e}") from None

    # -- writes -------------------------------------------------------------------------
    def begin_upload(self) -> str:
        return self._request("POST", "/uploads").json()["upload"]

    def put_blob(self, upload: str, sha256: str, size: int, chunks: Iterable[bytes]) -> None:
        limit = self.info().get("max_file_bytes")
        if limit is not None and size > limit:
            raise TooLarge(f"file of {size:,} bytes exceeds this hub's limit of {limit:,} bytes")
        self._request("PUT", f"/uploads/{quote(upload)}/{check_sha256(sha256)}", content=iter(chunks),
                      headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})

    def abort_upload(self, upload: str) -> None:
        self._request("DELETE", f"/uploads/{quote(upload)}")

    def commit(self, upload: str, repo: str, entries: list[FileEntry], tags: Iterable[str] = ()) -> dict:
        body = {"upload": upload, "files": [e.to_dict() for e in entries], "tags": list(tags)}
        return self._request("POST", f"/repos/{check_repo(repo)}/versions", json=body).json()

    def set_tag(self, repo: str, tag: str, version: str) -> str:
        body = {"version": version}
        return self._request("PUT", f"/repos/{check_repo(repo)}/tags/{quote(tag)}", json=body).json()["version"]

    def delete_tag(self, repo: str, tag: str) -> None:
        self._request("DELETE", f"/repos/{check_repo(repo)}/tags/{quote(tag)}")


def _raise_for(response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, str):
        detail = f"HTTP {response.status_code} from {response.request.url}" + (f": {detail}" if detail else "")
    raise HubError.from_response(response.status_code, body, detail, ERRORS_BY_STATUS)
