"""Property-style tests of the one validation layer (adapterkit/io/files.py) and of what reads through it.

Corrupted files: every truncation of a small valid file, random bytes, random byte flips, deep
nesting. The only failure ever allowed is a FileFormatError (one clear line, naming the file).
For safetensors, the check must agree with the safetensors library: a file our check accepts
loads there, and a file the library refuses is refused by our check.
"""
import json
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from adapterkit.errors import AdapterkitError
from adapterkit.io.files import (
    FileFormatError,
    check_shape,
    parse_json,
    read_json,
    read_manifest_json,
    safetensors_header,
    text_lines,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

GOOD_JSON = json.dumps({"format": "adapterkit", "format_version": 1, "name": "a",
                        "config": {"bottleneck_dim": 4, "targets": {"layers": "0|1"}},
                        "sites": [{"path": "bert.encoder.layer.0", "hidden": 32}], "head": ["classifier.weight"]},
                       indent=1).encode()
SCHEMA = {"name": str, "config": dict, "sites": [{"path": str, "hidden": int}], "head?": [str]}
GOOD_ST = st_save({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(3, dtype=torch.float16),
                   "i": torch.tensor([1, 2], dtype=torch.int64)}, metadata={"k": "v"})


def _json_file(tmp_path, data: bytes):
    path = tmp_path / "f.json"
    path.write_bytes(data)
    return path


def test_every_truncation_of_a_manifest_is_one_clear_error(tmp_path):
    for cut in range(len(GOOD_JSON)):
        path = _json_file(tmp_path, GOOD_JSON[:cut])
        with pytest.raises(FileFormatError, match="f.json"):
            read_manifest_json(path, "adapterkit", 1, "an adapter config", SCHEMA)


def test_the_untruncated_manifest_reads():
    assert parse_json(GOOD_JSON, "x", SCHEMA)["name"] == "a"


@FAST
@given(data=st.binary(max_size=400))
def test_random_bytes_as_json_are_refused_or_read(tmp_path, data):
    path = _json_file(tmp_path, data)
    try:
        value = read_json(path, "a config", schema=SCHEMA)
    except FileFormatError as e:
        assert "f.json" in str(e) and "\n" not in str(e)
    else:
        assert isinstance(value, dict) and isinstance(value["sites"], list)


@FAST
@given(position=st.integers(0, len(GOOD_JSON) - 1), byte=st.integers(0, 255))
def test_a_flipped_byte_in_a_manifest_is_refused_or_keeps_the_shape(tmp_path, position, byte):
    data = bytearray(GOOD_JSON)
    data[position] = byte
    path = _json_file(tmp_path, bytes(data))
    try:
        manifest = read_manifest_json(path, "adapterkit", 1, "an adapter config", SCHEMA)
    except FileFormatError:
        return
    check_shape(manifest, SCHEMA, "again")  # what was accepted has the shape the readers rely on
    assert all(isinstance(s["hidden"], int) for s in manifest["sites"])


@pytest.mark.parametrize("depth", [65, 1_000, 200_000])
@pytest.mark.parametrize("bracket", ["[", '{"a":'])
def test_deep_nesting_is_refused_without_recursion_error(tmp_path, depth, bracket):
    close = "]" if bracket == "[" else "}"
    path = _json_file(tmp_path, (bracket * depth + "1" + close * depth).encode())
    with pytest.raises(FileFormatError, match="nested"):
        read_json(path)


@FAST
@given(value=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                          max_leaves=20))
def test_json_of_any_shape_is_refused_or_matches_the_schema(tmp_path, value):
    path = _json_file(tmp_path, json.dumps(value).encode())
    try:
        read_json(path, schema=SCHEMA)
    except FileFormatError as e:
        assert "f.json" in str(e)
    else:
        check_shape(value, SCHEMA, "x")


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_nan_is_refused_where_asked(text):
    with pytest.raises(FileFormatError, match="not a JSON value"):
        parse_json('{"a": %s}' % text, "metrics.json", allow_nan=False)


def test_non_utf8_text_is_one_error_naming_the_line(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_bytes(b"a\tb\nok\tfine\n\xff\xfe\n")
    with pytest.raises(FileFormatError, match=r"t.tsv:3: not UTF-8"):
        list(text_lines(path, "a TSV file"))


# -- safetensors ------------------------------------------------------------------------------
def _library_accepts(data: bytes) -> bool:
    try:
        st_load(data)
    except Exception:  # noqa: BLE001 - any refusal by the library
        return False
    return True


def _we_accept(data: bytes) -> bool:
    try:
        safetensors_header("x.safetensors", data=data)
    except FileFormatError:
        return False
    return True


def test_the_good_file_is_accepted_by_both():
    assert _we_accept(GOOD_ST) and _library_accepts(GOOD_ST)


def test_every_truncation_of_a_safetensors_file_is_refused():
    for cut in range(len(GOOD_ST)):
        with pytest.raises(FileFormatError, match="not a safetensors file"):
            safetensors_header("x.safetensors", data=GOOD_ST[:cut])
        assert not _library_accepts(GOOD_ST[:cut])


@FAST
@given(position=st.integers(0, len(GOOD_ST) - 1), byte=st.integers(0, 255))
def test_a_flipped_byte_is_judged_as_the_safetensors_library_judges_it(position, byte):
    data = bytearray(GOOD_ST)
    data[position] = byte
    assert _we_accept(bytes(data)) == _library_accepts(bytes(data))


def _with_header(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


@FAST
@given(dtype=st.sampled_from(["F32", "F16", "I64", "U8", "BOOL", "F64", "X1"]),
       shape=st.lists(st.one_of(st.integers(-2, 4), st.floats(0, 3), st.just("2")), max_size=3),
       start=st.integers(-1, 40), stop=st.integers(-1, 40), body=st.integers(0, 40),
       meta=st.one_of(st.none(), st.just({"a": "b"}), st.just({"a": 1}), st.just("x")))
def test_crafted_headers_are_judged_as_the_safetensors_library_judges_them(dtype, shape, start, stop, body, meta):
    header = {"t": {"dtype": dtype, "shape": shape, "data_offsets": [start, stop]}}
    if meta is not None:
        header["__metadata__"] = meta
    data = _with_header(header, bytes(body))
    assert _we_accept(data) == _library_accepts(data), data[:200]


@FAST
@given(data=st.binary(max_size=300))
def test_random_bytes_are_never_a_safetensors_file(data):
    assert not _we_accept(data) or _library_accepts(data)


# -- what reads through the layer: adapter folders -------------------------------------------
@pytest.fixture(scope="module")
def adapter_folder(tmp_path_factory):
    import adapterkit as ak
    from tests.tiny_models import build

    model, _ = build("bert")
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=2, layers=[0]))
    return ak.save_adapter(model, "a", tmp_path_factory.mktemp("ad") / "a")


@pytest.mark.parametrize("name", ["adapterkit_weights.safetensors", "adapterkit_head.safetensors", "adapterkit_config.json"])
def test_every_truncation_of_an_adapter_file_fails_cleanly_and_leaves_the_model_as_it_was(adapter_folder, tmp_path, name):
    import shutil

    import adapterkit as ak
    from tests.tiny_models import build

    model, _ = build("bert")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    good = (adapter_folder / name).read_bytes()
    folder = tmp_path / "a"
    shutil.copytree(adapter_folder, folder)
    step = max(1, len(good) // 300)  # every byte boundary of the header, a sample of the data area
    header_end = 8 + struct.unpack("<Q", good[:8])[0] if name.endswith(".safetensors") else len(good)
    cuts = sorted(set(range(0, min(header_end + 1, len(good)))) | set(range(0, len(good), step)))
    for cut in [c for c in cuts if good[:c].strip() != good.strip()]:
        (folder / name).write_bytes(good[:cut])
        with pytest.raises(AdapterkitError):
            ak.load_adapter(model, folder)
        assert ak.list_adapters(model) == []
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
