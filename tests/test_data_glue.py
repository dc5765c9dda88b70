"""GLUE readers on the real files, strict errors, data resolution and the test fixtures."""
from __future__ import annotations

from collections import Counter

import pytest

from adapterkit.data import glue as glue_module
from adapterkit.data import get_task, load_glue, read_glue_tsv, resolve_glue_dir
from adapterkit.data.tasks import GlueTask, register_task
from adapterkit.errors import AdapterkitError
from tests.glue_fixtures import ALL_TASKS, SHARED_GLUE, write_glue_fixture, write_tsv

needs_real = pytest.mark.skipif(not SHARED_GLUE.is_dir(), reason="../shared/data/glue not present")

# (task, split, rows, {label id: count}) from ../shared/data/README.md
REAL_COUNTS = [
    ("cola", "train", 8551, {1: 6023, 0: 2528}),
    ("cola", "dev", 1043, {1: 721, 0: 322}),
    ("sst2", "dev", 872, {1: 444, 0: 428}),
    ("mrpc", "train", 3668, {1: 2474, 0: 1194}),
    ("mrpc", "dev", 408, {1: 279, 0: 129}),
    ("rte", "train", 2490, {0: 1249, 1: 1241}),  # 0 = entailment
    ("rte", "dev", 277, {0: 146, 1: 131}),
]


@needs_real
@pytest.mark.parametrize("task,split,rows,labels", REAL_COUNTS)
def test_real_files_row_and_label_counts(task, split, rows, labels):
    data = load_glue(task, split, data_dir=SHARED_GLUE)
    assert len(data) == rows
    assert dict(Counter(data["label"])) == labels
    assert all(t.strip() for t in data["text_a"])


@needs_real
def test_rte_row_starting_with_quote_is_one_field():
    data = read_glue_tsv(SHARED_GLUE / "RTE" / "train.tsv", get_task("rte"))
    premise = data["text_a"][2164]  # index 2164 is data row 2164 (0-based)
    assert premise.startswith('"That film wasn')
    assert len(data["label"]) == 2490


@needs_real
def test_mrpc_bom_is_stripped_and_cola_last_line_without_newline():
    raw = (SHARED_GLUE / "MRPC" / "dev.tsv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    mrpc = load_glue("mrpc", "dev", data_dir=SHARED_GLUE)
    assert mrpc[0]["text_b"].startswith('"The foodservice pie business')
    assert not (SHARED_GLUE / "CoLA" / "dev.tsv").read_bytes().endswith(b"\n")
    cola = load_glue("cola", "dev", data_dir=SHARED_GLUE)
    assert cola[-1]["text_a"] == "John talked to Bill about himself."


def test_limit_keeps_first_rows(tmp_path):
    root = write_glue_fixture(tmp_path, tasks=["rte"])
    assert len(load_glue("rte", "train", data_dir=root, limit=5)) == 5


@pytest.mark.parametrize("task", ALL_TASKS)
def test_fixture_loads_for_every_task(tmp_path, task):
    root = write_glue_fixture(tmp_path, tasks=[task], n_train=40, n_dev=16)
    spec = get_task(task)
    train = load_glue(task, "train", data_dir=root)
    dev = load_glue(task, "dev", data_dir=root)
    assert (len(train), len(dev)) == (40, 16)
    assert ("text_b" in train.column_names) == spec.is_pair
    if spec.is_regression:
        assert train.features["label"].dtype == "float32"
        assert len(set(train["label"])) > 5 and 0.0 <= min(train["label"]) <= max(train["label"]) <= 5.0
    else:
        assert set(train["label"]) <= set(range(spec.num_labels))
        assert len(set(train["label"])) >= 2


def test_mnli_reads_dev_matched_with_five_label_columns(tmp_path):
    root = write_glue_fixture(tmp_path, tasks=["mnli"], n_dev=9)
    header = (root / "MNLI" / "dev_matched.tsv").read_text().splitlines()[0].split("\t")
    assert header[-6:] == ["label1", "label2", "label3", "label4", "label5", "gold_label"]
    dev = load_glue("mnli", "dev", data_dir=root)
    assert dev["label"] == [0, 1, 2] * 3


def _write_rte(tmp_path, rows, **kw):
    return write_tsv(tmp_path / "RTE" / "train.tsv", ["index", "sentence1", "sentence2", "label"], rows, **kw)


@pytest.mark.parametrize("bad_row,message", [
    (["2", "only two columns"], "expected 4 tab-separated columns, found 2"),
    (["2", "a", "b", "maybe"], "unknown label 'maybe'"),
])
def test_malformed_row_names_file_and_line(tmp_path, bad_row, message):
    ok = ["1", "a b", "c d", "entailment"]
    path = _write_rte(tmp_path, [ok, ok, bad_row, ok])
    with pytest.raises(AdapterkitError) as err:
        load_glue("rte", "train", data_dir=tmp_path)
    assert f"{path}:4:" in str(err.value)  # header is line 1, bad row is line 4
    assert message in str(err.value)


def test_qqp_skips_rows_broken_by_newlines_with_a_warning(tmp_path):
    header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    ok = ["1", "2", "3", "How are you?", "How do you do?", "1"]
    # a newline inside question2 splits one row into two physical lines
    broken = [["4", "5", "6", "Why?", "Was Muhammad"], ["a real figure?", "0"]]
    path = write_tsv(tmp_path / "QQP" / "train.tsv", header, [ok, *broken, ok])
    with pytest.warns(UserWarning, match=rf"{path}: skipped 2 row\(s\) without 6 columns .* lines 3, 4"):
        data = load_glue("qqp", "train", data_dir=tmp_path)
    assert data["label"] == [1, 1]
    write_tsv(path, header, [ok, ok[:5] + ["2"]])
    with pytest.raises(AdapterkitError, match=rf"{path}:3: unknown label '2'"):
        load_glue("qqp", "train", data_dir=tmp_path)


def test_unparseable_score_names_file_and_line(tmp_path):
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2",
              "sentence1", "sentence2", "score"]
    row = ["0", "g", "f", "y", "0", "s", "s", "a", "b"]
    path = write_tsv(tmp_path / "STS-B" / "train.tsv", header, [row + ["1.5"], row + ["n/a"]])
    with pytest.raises(AdapterkitError, match=rf"{path}:3: score 'n/a' is not a number"):
        load_glue("stsb", "train", data_dir=tmp_path)


def test_header_without_needed_column_and_empty_files(tmp_path):
    path = write_tsv(tmp_path / "SST-2" / "train.tsv", ["text", "label"], [["x", "1"]])
    with pytest.raises(AdapterkitError, match=r"train.tsv:1: header lacks column\(s\) \['sentence'\]"):
        load_glue("sst2", "train", data_dir=tmp_path)
    write_tsv(path, ["sentence", "label"], [])
    with pytest.raises(AdapterkitError, match=rf"{path}: no data rows"):
        load_glue("sst2", "train", data_dir=tmp_path)
    path.write_text("")
    with pytest.raises(AdapterkitError, match=rf"{path}: file is empty"):
        load_glue("sst2", "train", data_dir=tmp_path)


def test_crlf_and_missing_trailing_newline_are_read(tmp_path):
    path = tmp_path / "SST-2" / "dev.tsv"
    path.parent.mkdir()
    path.write_bytes(b"sentence\tlabel\r\nfine \"quoted start\tx\r\nok\t1")
    with pytest.raises(AdapterkitError, match="unknown label 'x'"):
        load_glue("sst2", "dev", data_dir=tmp_path)
    path.write_bytes(b"sentence\tlabel\r\n\"quoted start\t0\r\nok\t1")
    data = load_glue("sst2", "dev", data_dir=tmp_path)
    assert data["text_a"] == ['"quoted start', "ok"] and data["label"] == [0, 1]


def test_missing_folder_and_file_say_how_to_point_at_data(tmp_path, monkeypatch):
    monkeypatch.delenv(glue_module.ENV_VAR, raising=False)
    with pytest.raises(AdapterkitError, match=r"no CoLA folder.*--data-dir DIR or set ADAPTERKIT_DATA_DIR"):
        load_glue("cola", "train", data_dir=tmp_path)
    with pytest.raises(AdapterkitError, match=r"data folder .*nowhere does not exist"):
        load_glue("cola", "train", data_dir=tmp_path / "nowhere")
    (tmp_path / "MNLI").mkdir()
    with pytest.raises(AdapterkitError, match=r"missing GLUE file .*MNLI/dev_matched.tsv.*--data-dir"):
        load_glue("mnli", "dev", data_dir=tmp_path)


def test_env_var_is_used_and_explicit_dir_wins(tmp_path, monkeypatch):
    env_root = write_glue_fixture(tmp_path / "env", tasks=["qqp"], n_train=12)
    flag_root = write_glue_fixture(tmp_path / "flag", tasks=["qqp"], n_train=7)
    monkeypatch.setenv(glue_module.ENV_VAR, str(env_root))
    assert resolve_glue_dir("qqp") == env_root / "QQP"
    assert len(load_glue("qqp", "train")) == 12
    assert len(load_glue("qqp", "train", data_dir=flag_root)) == 7


def test_well_known_local_folder_found_from_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv(glue_module.ENV_VAR, raising=False)
    write_glue_fixture(tmp_path / "data" / "glue", tasks=["qnli"])
    monkeypatch.chdir(tmp_path)
    assert resolve_glue_dir("qnli") == (tmp_path / "data" / "glue" / "QNLI").resolve()


def _no_local_data(monkeypatch, tmp_path, reachable=True):
    monkeypatch.delenv(glue_module.ENV_VAR, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(glue_module, "candidate_dirs", lambda: [tmp_path / "none"])
    monkeypatch.setattr(glue_module, "_hub_reachable", lambda: reachable)


def test_hub_fallback_renames_columns(tmp_path, monkeypatch):
    import datasets

    _no_local_data(monkeypatch, tmp_path)
    calls = []

    def fake_hub(config, split):
        calls.append((config, split))
        return datasets.Dataset.from_dict({"premise": ["p1", "p2"], "hypothesis": ["h1", "h2"],
                                           "label": [2, 0], "idx": [0, 1]})

    monkeypatch.setattr(glue_module, "_hub_load", fake_hub)
    dev = load_glue("mnli", "dev")
    assert calls == [("mnli", "validation_matched")]
    assert dev.column_names == ["text_a", "text_b", "label"]
    assert dev["text_b"] == ["h1", "h2"] and dev["label"] == [2, 0]


def test_hub_failure_offline_is_one_clear_error(tmp_path, monkeypatch):
    _no_local_data(monkeypatch, tmp_path)

    def offline(config, split):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(glue_module, "_hub_load", offline)
    with pytest.raises(AdapterkitError, match=r"no local data for task qqp and the hub dataset nyu-mll/glue "
                                              r"could not be loaded \(ConnectionError.*--data-dir"):
        load_glue("qqp", "train")


def test_unreachable_hub_fails_fast_unless_offline_cache_requested(tmp_path, monkeypatch):
    _no_local_data(monkeypatch, tmp_path, reachable=False)
    calls = []
    monkeypatch.setattr(glue_module, "_hub_load", lambda config, split: calls.append(config) or 1 / 0)
    with pytest.raises(AdapterkitError, match=r"task stsb and the Hugging Face hub is unreachable.*HF_HUB_OFFLINE=1"):
        load_glue("stsb", "train")
    assert calls == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AdapterkitError, match=r"could not be loaded \(ZeroDivisionError"):
        load_glue("stsb", "train")
    assert calls == ["stsb"]


def test_unknown_task_and_split():
    with pytest.raises(AdapterkitError, match="unknown task 'wnli'; known tasks: cola, sst2"):
        get_task("wnli")
    with pytest.raises(AdapterkitError, match="unknown split 'test'"):
        get_task("cola").split_file("test")


def test_task_table_validation_and_registry():
    assert get_task("MNLI").dev_file == "dev_matched.tsv"
    assert get_task("stsb").num_labels == 1 and get_task("mnli").num_labels == 3
    with pytest.raises(ValueError, match="already registered"):
        register_task(get_task("cola"))
    with pytest.raises(ValueError, match="1 or 2 names"):
        GlueTask("x", "X", ("a", "b", "c"), "label", ("0", "1"), ("accuracy",), hub_text_columns=("a",))


def test_importing_data_and_metrics_is_lean():
    import subprocess
    import sys

    code = ("import sys, adapterkit.data, adapterkit.data.metrics; "
            "print(sorted(m for m in ('datasets', 'torch', 'transformers', 'sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
