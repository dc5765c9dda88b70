"""The hub server at the HTTP level (raw requests, no client library in the way): tokens, name
validation, size limits and hash checks with their status codes, on a live loopback server."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import httpx
import pytest

from adapterkit.hub import HubError, Unauthorized, push_adapter
from tests.test_hub_support import (  # noqa: F401  (fixtures)
    LIMIT_BYTES,
    TOKEN,
    HubServer,
    make_adapter,
    server,
    server_env,
    snapshot,
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SHA = hashlib.sha256(b"x").hexdigest()


@pytest.fixture
def api(server):
    with httpx.Client(base_url=f"{server.url}/api/v1", trust_env=False, timeout=30) as client:
        yield client


@pytest.fixture
def seeded(server, tmp_path):
    return push_adapter(make_adapter(tmp_path / "seed"), "team/seed:v1", hub=server.url, token=TOKEN)


def _upload(api) -> str:
    r = api.post("/uploads", headers=AUTH)
    assert r.status_code == 200
    return r.json()["upload"]


def test_writes_need_the_token_and_change_nothing(api, server, seeded, tmp_path):
    before = snapshot(server.root, skip_tmp=False)
    upload = "0" * 32
    writes = [("POST", "/uploads", None), ("PUT", f"/uploads/{upload}/{SHA}", b"x"),
              ("DELETE", f"/uploads/{upload}", None),
              ("POST", "/repos/team/seed/versions", {"upload": upload, "files": [], "tags": []}),
              ("PUT", "/repos/team/seed/tags/evil", {"version": seeded}),
              ("DELETE", "/repos/team/seed/tags/v1", None)]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": TOKEN}):
        for method, path, body in writes:
            kwargs = {"json": body} if isinstance(body, dict) else {"content": body}
            r = api.request(method, path, headers=headers, **kwargs)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer" and r.json()["error"] == "Unauthorized"
    with pytest.raises(Unauthorized, match="invalid token"):
        push_adapter(make_adapter(tmp_path / "a", seed=9), "team/seed", hub=server.url, token="wrong")
    with pytest.raises(Unauthorized):
        push_adapter(make_adapter(tmp_path / "a", seed=9), "team/seed", hub=server.url)
    assert snapshot(server.root, skip_tmp=False) == before
    assert api.get("/repos/team/seed/tags").json() == {"latest": seeded, "v1": seeded}  # reads stay open


@pytest.mark.parametrize("method,path", [
    ("GET", "/repos/%2E%2E/seed"),
    ("GET", "/repos/team/%2E%2E%2F%2E%2E/tags"),
    ("GET", "/repos/team/seed/versions/..%2F..%2F..%2Fadapterkit-hub"),
    ("GET", "/repos/team/seed/tags/%2E%2E"),
    ("GET", "/repos/%2Fetc/passwd"),
    ("GET", "/repos/team/" + "n" * 65),
    ("GET", "/blobs/..%2F..%2Fadapterkit-hub.json"),
    ("GET", "/blobs/%2E%2E"),
    ("HEAD", "/blobs/" + "A" * 64),
    ("PUT", "/uploads/%2E%2E%2Ftmp/" + SHA),
    ("PUT", "/uploads/" + "0" * 32 + "/..%2F..%2Fadapterkit-hub.json"),
    ("PUT", "/repos/team/seed/tags/%2E%2Ehidden"),
    ("DELETE", "/uploads/%2E%2E"),
])
def test_traversal_and_odd_names_get_4xx(api, server, seeded, method, path):
    before = snapshot(server.root, skip_tmp=False)
    body = {"json": {"version": seeded}} if "/tags/" in path else {"content": b"x"} if method == "PUT" else {}
    r = api.request(method, path, headers=AUTH, **body)
    assert r.status_code in (400, 404, 405), (path, r.status_code, r.text)
    if r.status_code == 400 and method != "HEAD":
        assert r.json()["error"] == "InvalidName"
    assert b"adapterkit.hub" not in r.content
    assert snapshot(server.root, skip_tmp=False) == before


def test_commit_refuses_bad_file_lists(api, server, seeded):
    upload = _upload(api)
    data = b'{"a": 1}'
    sha = hashlib.sha256(data).hexdigest()
    assert api.put(f"/uploads/{upload}/{sha}", content=data, headers=AUTH).status_code == 201
    before = snapshot(server.root)
    cases = [
        ([{"path": "../../evil.json", "sha256": sha, "size": len(data)}], 400, "InvalidName"),
        ([{"path": "/abs.json", "sha256": sha, "size": len(data)}], 400, "InvalidName"),
        ([{"path": "model.bin", "sha256": sha, "size": len(data)}], 415, "UnsupportedFile"),
        ([{"path": "metrics.json", "sha256": sha, "size": len(data)}], 400, "HubError"),  # no config: not an adapter
        ([{"path": "adapterkit_config.json", "sha256": SHA, "size": 1}], 404, "NotFound"),  # never uploaded
        ([{"path": "adapterkit_config.json", "sha256": sha, "size": 99}], 422, "IntegrityError"),  # wrong size
    ]
    for files, status, error in cases:
        r = api.post("/repos/team/seed/versions", json={"upload": upload, "files": files}, headers=AUTH)
        assert (r.status_code, r.json()["error"]) == (status, error), (files, r.text)
    r = api.post("/repos/team/seed/versions", headers=AUTH,
                 json={"upload": "../" * 10, "files": [{"path": "adapterkit_config.json", "sha256": sha, "size": 8}]})
    assert r.status_code == 400
    assert snapshot(server.root) == before
    assert api.delete(f"/uploads/{upload}", headers=AUTH).status_code == 200


def test_upload_hash_is_recomputed_and_mismatch_refused(api, server, seeded):
    upload = _upload(api)
    r = api.put(f"/uploads/{upload}/{SHA}", content=b"not x", headers=AUTH)
    assert r.status_code == 422 and "corrupted" in r.json()["detail"]
    assert not list((server.root / "tmp" / upload).iterdir())
    r = api.put(f"/uploads/{upload}/{SHA}", content=b"x", headers=AUTH)
    assert r.status_code == 201 and r.json() == {"sha256": SHA, "size": 1}
    api.delete(f"/uploads/{upload}", headers=AUTH)
    assert not (server.root / "tmp" / upload).exists()


def test_oversized_uploads_get_413(api, server, seeded):
    upload = _upload(api)
    big = b"\0" * (LIMIT_BYTES + 1)
    sha = hashlib.sha256(big).hexdigest()
    r = api.put(f"/uploads/{upload}/{sha}", content=big, headers=AUTH)  # declared by Content-Length
    assert r.status_code == 413 and r.json()["error"] == "TooLarge"

    def chunked():  # no Content-Length: counted while streaming
        for _ in range(LIMIT_BYTES // 4096 + 1):
            yield b"\0" * 4096
    r = api.put(f"/uploads/{upload}/{SHA}", content=chunked(), headers=AUTH)
    assert r.status_code == 413
    assert not [p for p in (server.root / "tmp").rglob("*") if p.is_file()]
    api.delete(f"/uploads/{upload}", headers=AUTH)


def test_read_only_server_and_foreign_folder(tmp_path):
    ro = HubServer(tmp_path / "ro", token_file=None)
    try:
        with pytest.raises(Unauthorized, match="read-only"):
            push_adapter(make_adapter(tmp_path / "a"), "team/x", hub=ro.url, token=TOKEN)
        assert httpx.get(f"{ro.url}/api/v1/repos", trust_env=False).json() == []
    finally:
        ro.stop()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    proc = subprocess.run([sys.executable, "-m", "adapterkit_hub", "--root", str(foreign), "--port", "1"],
                          env=server_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "is not an adapterkit hub" in proc.stderr
    with pytest.raises(HubError, match="cannot reach hub"):
        push_adapter(make_adapter(tmp_path / "b"), "team/x", hub=ro.url, token=TOKEN)


def test_large_json_bodies_are_refused_before_buffering(api, server, seeded):
    before = snapshot(server.root, skip_tmp=False)
    big = {"upload": "0" * 32, "files": [], "pad": "x" * (2 << 20)}
    r = api.post("/repos/team/seed/versions", json=big)  # no token: refused before the body is read
    assert r.status_code == 401 and r.json()["error"] == "Unauthorized"
    r = api.post("/repos/team/seed/versions", json=big, headers=AUTH)
    assert r.status_code == 413 and r.json()["error"] == "TooLarge"

    def chunked():
        for _ in range(40):
            yield b" " * 65536
    r = api.put("/repos/team/seed/tags/v2", content=chunked(), headers=AUTH)
    assert r.status_code == 413
    r = api.put("/repos/team/seed/tags/v2", json={"version": seeded[:12]}, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"version": seeded}
    changed = {k for k, v in snapshot(server.root, skip_tmp=False).items() if before.get(k) != v}
    assert changed == {"repos/team/seed/tags.json"}  # only the one authorised, small request wrote
