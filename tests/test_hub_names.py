"""Hub pieces without a hub: references, name rules, file checks, cards, lean import."""
from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest

from adapterkit.hub import HubError, IntegrityError, InvalidName, Ref, UnsupportedFile, parse_ref
from adapterkit.hub.card import build_card
from adapterkit.hub.files import FileEntry, check_content, count_parameters, hash_file, scan_folder, version_id
from adapterkit.hub.refs import check_file_path
from tests.test_hub_support import expected_parameters, expected_version, make_adapter


@pytest.mark.parametrize("text,ref", [
    ("team/sst2", Ref("team/sst2", tag="latest")),
    ("team/sst2:v1", Ref("team/sst2", tag="v1")),
    ("hub:team/sst2:best", Ref("team/sst2", tag="best")),
    ("Team_1/my.adapter-2@3fa9c2e1", Ref("Team_1/my.adapter-2", version="3fa9c2e1")),
    ("a/b@" + "0" * 64, Ref("a/b", version="0" * 64)),
])
def test_parse_ref(text, ref):
    assert parse_ref(text) == ref
    assert str(parse_ref(str(ref))) == str(ref)


@pytest.mark.parametrize("text", [
    "", "sst2", "a/b/c", "../b", "a/..", "/abs/b", "a/b:", "a/b:..", "a/b:v 1", "a/b@xyz", "a/b@1234567",
    "a/b@" + "0" * 65, "a/b@ABCDEF12", "-a/b", "a/.b", "a\x00/b", "a/b:" + "t" * 65, "é/b",
])
def test_bad_refs_are_refused(text):
    with pytest.raises(InvalidName):
        parse_ref(text)


def test_versions_only_where_allowed():
    with pytest.raises(InvalidName, match="only a tag"):
        parse_ref("a/b@12345678", allow_version=False)


@pytest.mark.parametrize("path", ["../x.json", "/x.json", "a/../x.json", ".hidden.json", "a//b.json", "",
                                  "a/b/c/d/e.json", "x" * 129 + ".json", "a\\b.json", "sp ace.json"])
def test_bad_file_paths(path):
    with pytest.raises(InvalidName):
        check_file_path(path)


def test_good_file_paths():
    for path in ("vocab.txt", "tokenizer/vocab.txt", "_a/b-c/d.e.json"):
        assert check_file_path(path) == path


def test_scan_folder_keeps_stored_types_and_refuses_pickles(tmp_path):
    src = make_adapter(tmp_path / "a")
    (src / ".DS_Store").write_bytes(b"\0")
    (src / "curve.png").write_bytes(b"\x89PNG")
    (src / "tokenizer").mkdir()
    (src / "tokenizer" / "merges.txt").write_text("a b\n")
    keep, skipped = scan_folder(src)
    assert [rel for _, rel in keep] == ["adapterkit_config.json", "adapterkit_head.safetensors",
                                        "adapterkit_weights.safetensors", "metrics.json", "tokenizer/merges.txt",
                                        "train.log", "vocab.txt"]
    assert skipped == ["curve.png"]
    for name in ("optimizer.pt", "training_args.bin", "x.pkl", "ckpt/state.pth"):
        bad = make_adapter(tmp_path / name.replace("/", "_"))
        (bad / name).parent.mkdir(exist_ok=True)
        (bad / name).write_bytes(b"\x80\x04.")
        with pytest.raises(UnsupportedFile, match="pickle"):
            scan_folder(bad)
    with pytest.raises(HubError, match="no adapterkit_config.json"):
        scan_folder(tmp_path)


def test_version_id_is_sha256_of_the_sorted_listing(tmp_path):
    src = make_adapter(tmp_path / "a")
    keep, _ = scan_folder(src)
    entries = [FileEntry(rel, *hash_file(p)) for p, rel in keep]
    assert version_id(entries) == version_id(reversed(entries)) == expected_version(src)


def _safetensors(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize("blob", [
    b"",
    b"\x80\x04K\x01.",  # a pickle
    struct.pack("<Q", 10 ** 9) + b"{}",  # header longer than the file
    _safetensors({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, b"\0" * 8),  # data short
    _safetensors({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}, b"\0" * 16),  # size != shape
    _safetensors({"w": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}, b"\0"),  # unknown dtype
    _safetensors(["not", "an", "object"], b""),
])
def test_malformed_safetensors_are_refused(tmp_path, blob):
    path = tmp_path / "w.safetensors"
    path.write_bytes(blob)
    with pytest.raises(IntegrityError, match="not a safetensors file"):
        check_content(path, "w.safetensors")


def test_content_checks_by_type(tmp_path):
    good = _safetensors({"__metadata__": {"a": "b"}, "w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}},
                        b"\0" * 6)
    (tmp_path / "w.safetensors").write_bytes(good)
    check_content(tmp_path / "w.safetensors", "w.safetensors")
    assert count_parameters(tmp_path / "w.safetensors") == 3
    (tmp_path / "v.txt").write_bytes(b"a\x00b")
    with pytest.raises(IntegrityError, match="NUL"):
        check_content(tmp_path / "v.txt", "v.txt")
    (tmp_path / "v.json").write_bytes(b"\xff\xfe")
    with pytest.raises(IntegrityError, match="UTF-8"):
        check_content(tmp_path / "v.json", "v.json")


def test_card_tolerates_missing_metrics_and_head(tmp_path):
    src = make_adapter(tmp_path / "a", hidden=16, bottleneck=4, groups=3)
    (src / "metrics.json").unlink()
    (src / "adapterkit_head.safetensors").unlink()
    cfg = json.loads((src / "adapterkit_config.json").read_text())
    del cfg["base_model"], cfg["config"]
    (src / "adapterkit_config.json").write_text(json.dumps(cfg))
    keep, _ = scan_folder(src)
    entries = [FileEntry(rel, *hash_file(p)) for p, rel in keep]
    card = build_card("a/b", version_id(entries), entries, path_of=lambda name: src / name)
    assert card["task"] is None and card["metrics"] is None and card["base_model"] is None
    assert card["sharing"] is None and card["num_groups"] == 3
    assert card["parameters"] == {"adapter": expected_parameters(16, 4, 3), "total": expected_parameters(16, 4, 3)}
    assert card["size"] == sum(e.size for e in entries)


def test_import_is_lean():
    code = ("import sys, adapterkit.hub; "
            "print(sorted(m for m in ('torch', 'httpx', 'fastapi', 'uvicorn', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
