"""Hub behaviour, each test run against a folder store and against a real server on loopback."""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from adapterkit.hub import (
    FolderStore,
    HttpStore,
    HubError,
    IntegrityError,
    InvalidName,
    NotFound,
    TooLarge,
    UnsupportedFile,
    delete_tag,
    list_repos,
    pull_adapter,
    push_adapter,
    repo_info,
    show,
    tag,
)
from tests.test_hub_support import (  # noqa: F401  (fixtures)
    LIMIT_BYTES,
    TOKEN,
    expected_parameters,
    expected_version,
    hub,
    make_adapter,
    server,
    snapshot,
)

STORED = ["adapterkit_config.json", "adapterkit_head.safetensors", "adapterkit_weights.safetensors",
          "metrics.json", "train.log", "vocab.txt"]


def test_round_trip_is_byte_identical_with_a_full_card(hub, tmp_path):
    src = make_adapter(tmp_path / "a")
    version = push_adapter(src, "team/rt:v1", hub=hub.spec, token=hub.token)
    assert version == expected_version(src)

    out = pull_adapter("team/rt:v1", tmp_path / "out", hub=hub.spec)
    assert sorted(p.name for p in out.iterdir()) == STORED
    for name in STORED:
        assert (out / name).read_bytes() == (src / name).read_bytes()

    card = show("team/rt", hub=hub.spec)
    assert card["version"] == version and card["repo"] == "team/rt"
    assert card["task"] == "sst2" and card["metrics"] == {"accuracy": 0.9125, "epoch": 2}
    assert card["base_model"]["config_hash"] == "0123456789abcdef" and card["base_model"]["hidden_size"] == 32
    assert card["sharing"] == 3 and card["bottleneck_dim"] == 8 and card["num_groups"] == 2
    assert card["parameters"] == {"adapter": expected_parameters(), "head": 66, "total": expected_parameters() + 66}
    files = {f["path"]: f for f in card["files"]}
    assert sorted(files) == STORED
    for name in STORED:
        data = (src / name).read_bytes()
        assert files[name] == {"path": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def test_identical_content_is_one_version_and_tags_move(hub, tmp_path):
    a, b = make_adapter(tmp_path / "a", seed=1), make_adapter(tmp_path / "b", seed=2)
    v1 = push_adapter(a, "team/ver:v1", hub=hub.spec, token=hub.token)
    assert push_adapter(a, "team/ver", hub=hub.spec, token=hub.token) == v1
    assert [v["version"] for v in repo_info("team/ver", hub=hub.spec)["versions"]] == [v1]

    v2 = push_adapter(b, "team/ver", hub=hub.spec, token=hub.token, tags=["best"])
    assert v2 != v1
    info = repo_info("team/ver", hub=hub.spec)
    assert info["tags"] == {"latest": v2, "v1": v1, "best": v2}
    assert {v["version"] for v in info["versions"]} == {v1, v2}

    assert tag(f"team/ver@{v1[:10]}", "best", hub=hub.spec, token=hub.token) == v1
    assert show("team/ver:best", hub=hub.spec)["version"] == v1
    assert pull_adapter(f"team/ver@{v2[:8]}", tmp_path / "o2", hub=hub.spec).joinpath("vocab.txt").exists()
    delete_tag("team/ver:best", hub=hub.spec, token=hub.token)
    assert "best" not in repo_info("team/ver", hub=hub.spec)["tags"]
    with pytest.raises(HubError, match="cannot be deleted"):
        delete_tag("team/ver:latest", hub=hub.spec, token=hub.token)
    with pytest.raises(NotFound, match="no tag 'best'"):
        pull_adapter("team/ver:best", tmp_path / "o3", hub=hub.spec)
    assert [r["repo"] for r in list_repos("team/ve*", hub=hub.spec)] == ["team/ver"]


def _push_one(spec, folder, repo, token, barrier, results):
    barrier.wait()
    results.put((folder, push_adapter(folder, repo, hub=spec, token=token)))


def test_thirty_concurrent_pushes_from_processes_all_land(hub, tmp_path):
    spec = str(hub.root) if hub.kind == "folder" else hub.url
    folders = [str(make_adapter(tmp_path / f"a{i}", seed=100 + i)) for i in range(30)]
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(30), ctx.Queue()
    procs = [ctx.Process(target=_push_one, args=(spec, f, f"team/conc:p{i}", hub.token, barrier, results))
             for i, f in enumerate(folders)]
    for p in procs:
        p.start()
    pushed = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * 30

    assert pushed == {f: expected_version(Path(f)) for f in folders}
    info = repo_info("team/conc", hub=spec)
    assert {v["version"] for v in info["versions"]} == set(pushed.values())
    assert {t: v for t, v in info["tags"].items() if t != "latest"} == \
        {f"p{i}": pushed[f] for i, f in enumerate(folders)}  # no tag move was lost
    assert info["tags"]["latest"] in pushed.values()


def test_hub_created_by_another_process_between_two_looks_is_accepted(tmp_path, monkeypatch):
    """The race behind concurrent first pushes: the marker is missing at the first look, then
    another process writes it and makes its folders before this one lists the root."""
    from adapterkit.hub import store as store_module

    root = tmp_path / "hub"
    FolderStore(root).check_root(create=True)
    (root / "blobs").mkdir(exist_ok=True)
    looks = []
    real_is_file = Path.is_file

    def marker_late(path):
        if path.name == store_module.MARKER and not looks:
            looks.append(path)
            return False  # not there yet at the first look
        return real_is_file(path)

    monkeypatch.setattr(Path, "is_file", marker_late)
    assert FolderStore(root).check_root(create=True)
    assert looks  # the race was exercised
    (root / store_module.MARKER).unlink()
    with pytest.raises(HubError, match="not an adapterkit hub"):  # a foreign folder is still refused
        FolderStore(root).check_root(create=True)


def _stall_mid_upload(kind, where, first, second, token):
    """Upload file `first` whole and half of `second`, then hang until killed."""
    store = FolderStore(where) if kind == "folder" else HttpStore(where, token)
    upload = store.begin_upload()
    store.put_blob(upload, hashlib.sha256(first).hexdigest(), len(first), [first])

    def stalled():
        yield second[: len(second) // 2]
        time.sleep(600)

    store.put_blob(upload, hashlib.sha256(second).hexdigest(), len(second), stalled())


def test_client_killed_mid_upload_leaves_the_hub_as_it_was(hub, tmp_path):
    src = make_adapter(tmp_path / "a", seed=3)
    version = push_adapter(src, "team/kill:v1", hub=hub.spec, token=hub.token)
    before = snapshot(hub.root)

    new = make_adapter(tmp_path / "b", seed=4)
    first, second = (new / "adapterkit_config.json").read_bytes(), (new / "adapterkit_weights.safetensors").read_bytes()
    where = str(hub.root) if hub.kind == "folder" else hub.url
    child = multiprocessing.get_context("fork").Process(
        target=_stall_mid_upload, args=(hub.kind, where, first, second, hub.token))
    child.start()
    assert _wait_for(lambda: any(p.stat().st_size > 0 for p in (hub.root / "tmp").glob("*/*.part-*")), 30)
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)

    assert snapshot(hub.root) == before  # no blob, card or tag changed
    assert repo_info("team/kill", hub=hub.spec)["tags"] == {"latest": version, "v1": version}
    if hub.kind == "server":  # the server saw the disconnect and dropped the partial file
        assert _wait_for(lambda: not list((hub.root / "tmp").glob("*/*.part-*")), 10)
    out = pull_adapter("team/kill", tmp_path / "out", hub=hub.spec)
    assert (out / "adapterkit_weights.safetensors").read_bytes() == (src / "adapterkit_weights.safetensors").read_bytes()

    stale = time.time() - 2 * 24 * 3600  # abandoned staging is reaped by a later push after a day
    for d in (hub.root / "tmp").iterdir():
        os.utime(d, (stale, stale))
    push_adapter(new, "team/kill", hub=hub.spec, token=hub.token)
    assert not [p for p in (hub.root / "tmp").rglob("*") if p.is_file()]


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("ref", [
    "../evil", "team/../x", "/etc/passwd", "team//x", "team/x/y", ".hidden/x", "team/.x", "team/na me",
    "team/x;rm", "t" * 65 + "/x", "team/" + "n" * 65, "team/x:../t", "team/x:" + "t" * 65, "team\\x",
])
def test_bad_names_are_refused_and_change_nothing(hub, tmp_path, ref):
    src = make_adapter(tmp_path / "a")
    push_adapter(src, "team/named", hub=hub.spec, token=hub.token)
    before = snapshot(hub.root)
    with pytest.raises(InvalidName):
        push_adapter(src, ref, hub=hub.spec, token=hub.token)
    with pytest.raises(InvalidName):
        pull_adapter(ref, tmp_path / "out", hub=hub.spec)
    assert snapshot(hub.root) == before and not (tmp_path / "out").exists()


def test_oversized_upload_is_refused(hub, tmp_path):
    push_adapter(make_adapter(tmp_path / "ok"), "team/small", hub=hub.spec, token=hub.token)
    src = make_adapter(tmp_path / "a", hidden=512, bottleneck=16)  # weights ~130 KiB > 64 KiB limit
    assert (src / "adapterkit_weights.safetensors").stat().st_size > LIMIT_BYTES
    before = snapshot(hub.root)
    with pytest.raises(TooLarge, match="limit of 65,536 bytes"):
        push_adapter(src, "team/big", hub=hub.spec, token=hub.token)
    assert snapshot(hub.root) == before
    assert not [p for p in (hub.root / "tmp").rglob("*") if p.is_file()]


def test_corrupted_blob_is_detected_on_pull(hub, tmp_path):
    src = make_adapter(tmp_path / "a", seed=5)
    push_adapter(src, "team/rot:v1", hub=hub.spec, token=hub.token)
    digest = hashlib.sha256((src / "adapterkit_weights.safetensors").read_bytes()).hexdigest()
    blob = hub.root / "blobs" / "sha256" / digest[:2] / digest
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # same size, one flipped byte: a valid-looking file with the wrong content
    blob.write_bytes(bytes(data))

    with pytest.raises(IntegrityError, match="adapterkit_weights.safetensors.*refused"):
        pull_adapter("team/rot:v1", tmp_path / "out", hub=hub.spec)
    with pytest.raises(IntegrityError):
        pull_adapter("team/rot:v1", hub=hub.spec)  # into the cache
    assert not (tmp_path / "out").exists()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # nothing half-written is left


def test_tampered_card_is_refused(hub, tmp_path):
    src = make_adapter(tmp_path / "a", seed=6)
    version = push_adapter(src, "team/card", hub=hub.spec, token=hub.token)
    card_path = hub.root / "repos" / "team" / "card" / "versions" / f"{version}.json"
    card = json.loads(card_path.read_text())
    card["files"] = [f for f in card["files"] if f["path"] != "metrics.json"]
    card_path.write_text(json.dumps(card))
    with pytest.raises(IntegrityError, match="does not match its version id"):
        pull_adapter("team/card", tmp_path / "out", hub=hub.spec)


def test_pickles_and_fake_files_are_refused(hub, tmp_path):
    push_adapter(make_adapter(tmp_path / "ok"), "team/good", hub=hub.spec, token=hub.token)
    before = snapshot(hub.root)
    pickled = make_adapter(tmp_path / "p")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(UnsupportedFile, match="pickle"):
        push_adapter(pickled, "team/bad", hub=hub.spec, token=hub.token)

    fake = make_adapter(tmp_path / "f")
    (fake / "adapterkit_weights.safetensors").write_bytes(b"\x80\x04K\x01." * 10)
    with pytest.raises(IntegrityError, match="not a safetensors file"):
        push_adapter(fake, "team/bad", hub=hub.spec, token=hub.token)

    bad_json = make_adapter(tmp_path / "j")
    (bad_json / "metrics.json").write_text("{not json")
    with pytest.raises(IntegrityError, match="not valid JSON"):
        push_adapter(bad_json, "team/bad", hub=hub.spec, token=hub.token)

    with pytest.raises(HubError, match="not an adapterkit adapter"):
        push_adapter(tmp_path / "nonexistent", "team/bad", hub=hub.spec, token=hub.token)
    assert snapshot(hub.root) == before
    assert not [p for p in (hub.root / "tmp").rglob("*") if p.is_file()]  # refused uploads are cleaned up
    assert list_repos("team/bad", hub=hub.spec) == [] and list_repos("team/good", hub=hub.spec) != []


def test_pull_cache_is_reused_and_repaired(hub, tmp_path):
    src = make_adapter(tmp_path / "a", seed=7)
    version = push_adapter(src, "team/cache", hub=hub.spec, token=hub.token)
    path = pull_adapter("hub:team/cache", hub=hub.spec)
    assert path == tmp_path / "cache" / "pulled" / "team" / "cache" / version
    mtime = (path / "vocab.txt").stat().st_mtime_ns
    assert pull_adapter("team/cache", hub=hub.spec) == path
    assert (path / "vocab.txt").stat().st_mtime_ns == mtime  # verified cache hit, not re-downloaded
    (path / "vocab.txt").write_text("tampered\n")
    assert pull_adapter("team/cache", hub=hub.spec) == path
    assert (path / "vocab.txt").read_bytes() == (src / "vocab.txt").read_bytes()
    with pytest.raises(HubError, match="not empty"):
        pull_adapter("team/cache", tmp_path / "a", hub=hub.spec)
