"""Hub acceptance rules on a live server: unusable files are refused and a commit lands whole or
not at all; authentication before validation; deep or NaN JSON never a 500; files readable
under the umask."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import struct

import httpx
import pytest

from adapterkit.hub import push_adapter
from tests.test_hub_support import TOKEN, make_adapter, server, snapshot  # noqa: F401  (fixture)

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api(server):
    with httpx.Client(base_url=f"{server.url}/api/v1", trust_env=False, timeout=30) as client:
        yield client


def _st(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
BAD_SAFETENSORS = {
    "overlap": _st({"a": F32, "b": {**F32, "data_offsets": [4, 12]}}, b"\0" * 12),
    "gap": _st({"a": F32, "b": {**F32, "data_offsets": [12, 20]}}, b"\0" * 20),
    "negative dim": _st({"a": {**F32, "shape": [-2]}}, b"\0" * 8),
    "float dim": _st({"a": {**F32, "shape": [2.0]}}, b"\0" * 8),
    "string dim": _st({"a": {**F32, "shape": ["2"]}}, b"\0" * 8),
    "trailing bytes": _st({"a": F32}, b"\0" * 9),
    "metadata not strings": _st({"__metadata__": {"k": 1}, "a": F32}, b"\0" * 8),
}


def _commit(api, files: dict[str, bytes], headers=AUTH):
    upload = api.post("/uploads", headers=AUTH).json()["upload"]
    entries = []
    for path, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        assert api.put(f"/uploads/{upload}/{sha}", content=data, headers=AUTH).status_code == 201
        entries.append({"path": path, "sha256": sha, "size": len(data)})
    return api.post("/repos/team/acc/versions", json={"upload": upload, "files": entries, "tags": ["t"]}, headers=headers)


def _adapter_files(tmp_path) -> dict[str, bytes]:
    folder = make_adapter(tmp_path / "ad")
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix in (".json", ".safetensors")}


@pytest.mark.parametrize("case", sorted(BAD_SAFETENSORS))
def test_invalid_safetensors_are_refused_and_nothing_lands(api, server, tmp_path, case):
    files = _adapter_files(tmp_path)
    before = snapshot(server.root)
    r = _commit(api, {**files, "adapterkit_weights.safetensors": BAD_SAFETENSORS[case]})
    assert r.status_code == 422 and "safetensors" in r.json()["detail"], (case, r.text)
    assert snapshot(server.root) == before


@pytest.mark.parametrize("metrics, why", ids=["nan", "infinity", "deep"], argvalues=[
    (b'{"task": "sst2", "best": {"accuracy": NaN}}', "NaN"),
    (b'{"best": {"accuracy": Infinity}}', "Infinity"),
    (b"[" * 5000 + b"]" * 5000, "deep"),
])
def test_nan_and_deep_json_are_422_and_tags_do_not_move(api, server, tmp_path, metrics, why):
    files = _adapter_files(tmp_path)
    before = snapshot(server.root)
    r = _commit(api, {**files, "metrics.json": metrics})
    assert r.status_code == 422, (why, r.status_code, r.text)
    assert snapshot(server.root) == before


def test_a_file_and_a_folder_of_the_same_name_are_refused(api, server, tmp_path):
    files = _adapter_files(tmp_path)
    before = snapshot(server.root)
    r = _commit(api, {**files, "x.json": b"{}", "x.json/y.json": b"{}"})
    assert r.status_code == 400 and "both a file and a folder" in r.json()["detail"]
    assert snapshot(server.root) == before


def test_authentication_comes_before_body_validation(api):
    for body in (b"{not json", b"[" * 10000, json.dumps({"files": "x"}).encode()):
        r = api.post("/repos/team/acc/versions", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 401, r.text
    r = api.post("/repos/team/acc/versions", content=b"[" * 100000, headers={**AUTH, "Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.text  # deep JSON from an authenticated client: 4xx, not 500


def test_cards_are_capped_and_files_follow_the_umask(api, server, tmp_path):
    folder = make_adapter(tmp_path / "big")
    (folder / "metrics.json").write_text(json.dumps({"task": "t" * 20_000, "best": {f"m{i}": i for i in range(2000)}}))
    version = push_adapter(folder, "team/big", hub=server.url, token=TOKEN)
    card = api.get(f"/repos/team/big/versions/{version}").json()
    assert card["task"] is None and len(card["metrics"]) <= 32 and len(json.dumps(card)) < 20_000
    umask = os.umask(0o022)
    os.umask(umask)
    for path in (server.root / "repos" / "team" / "big").rglob("*.json"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044 & ~umask, path


def test_a_held_repository_lock_times_out_naming_the_lock(tmp_path, monkeypatch):
    import subprocess
    import sys
    import time

    from adapterkit.hub import Busy
    from adapterkit.hub.store import FolderStore

    store = FolderStore(tmp_path / "hub")
    push_adapter(make_adapter(tmp_path / "a"), "team/locked", hub=str(store.root))
    lock = store.root / "locks" / "team" / "locked.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time\n"
                               f"f = open({str(lock)!r}, 'a'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("ADAPTERKIT_HUB_LOCK_TIMEOUT", "0.5")
        t0 = time.monotonic()
        with pytest.raises(Busy, match="locked.lock"):
            store.set_tag("team/locked", "v2", store.tags("team/locked")["latest"])
        assert 0.4 < time.monotonic() - t0 < 10
    finally:
        holder.kill()
        holder.wait()
    store.set_tag("team/locked", "v2", store.tags("team/locked")["latest"])  # free again


@pytest.mark.parametrize("body", [b'{"upload": NaN}', b'{"upload": "x", "files": [{"path": "a", "sha256": "0", "size": Infinity}]}',
                                  b'{"upload": 3, "files": "x"}', b"[]", b'"x"', b"\xff\xfe", b""])
@pytest.mark.parametrize("route", ["POST /repos/team/acc/versions", "PUT /repos/team/acc/tags/x"])
def test_malformed_request_bodies_are_4xx_never_500(api, body, route):
    method, path = route.split()
    r = api.request(method, path, content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert isinstance(r.json()["detail"], str)
