"""Permission errors (read-only folders, unreadable files) are one line and lose nothing, also when
the suite runs as root (tests.unprivileged drops root's permission override for the test)."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.test_reliability_cli import _inputs, refused, run_dir  # noqa: F401  (fixture)
from tests.unprivileged import unprivileged


@pytest.fixture()
def read_only(tmp_path):
    """make(path): chmod a folder to 0555 for the test; modes are restored afterwards."""
    changed = []

    def make(path, mode=0o555):
        changed.append((path, os.stat(path).st_mode))
        os.chmod(path, mode)
        return path

    yield make
    for path, mode in reversed(changed):
        os.chmod(path, mode)


def test_outputs_in_a_read_only_folder_are_refused_before_work(capsys, run_dir, tmp_path, read_only):  # noqa: F811
    inputs = _inputs(tmp_path / "in.jsonl")
    (tmp_path / "locked").mkdir()
    locked = read_only(tmp_path / "locked")
    with unprivileged():
        refused(capsys, "predict", "--adapter", run_dir, "--input", inputs, "--output", locked / "p.jsonl", match="permission denied")
        refused(capsys, "train", "--task", "rte", "--output", locked / "run", match="permission denied")
        refused(capsys, "export", run_dir, locked / "x", "--to", "adapterhub", match="permission denied")
    assert list(locked.iterdir()) == []


def test_folder_hub_permission_errors_are_one_line(capsys, run_dir, tmp_path, read_only):  # noqa: F811
    hub = tmp_path / "hub"
    assert _ok(capsys, "push", run_dir, "team/a", "--hub", hub)
    read_only(hub / "repos" / "team")  # no new repository can be made here
    (tmp_path / "dest").mkdir()
    dest = read_only(tmp_path / "dest")
    tags = hub / "repos" / "team" / "a" / "tags.json"
    with unprivileged():
        refused(capsys, "push", run_dir, "team/b", "--hub", hub, match="ermission denied")
        refused(capsys, "pull", "team/a", dest / "a", "--hub", hub, match="ermission denied")
    assert not (hub / "repos" / "team" / "b").exists() and list(dest.iterdir()) == []
    read_only(tags, 0o000)
    with unprivileged():
        refused(capsys, "hub", "list", "--hub", hub, match="ermission denied")
        refused(capsys, "pull", "team/a", tmp_path / "out", "--hub", hub, match="ermission denied")
    assert not (tmp_path / "out").exists()


def test_a_read_only_checkpoint_folder_does_not_block_later_saves(tmp_path, read_only):
    from tests.test_reliability_checkpoint import _recovered_epoch, _save

    path = tmp_path / "checkpoint"
    _save(path, 0)
    read_only(path)
    with unprivileged():
        _save(path, 1)
    read_only(path)
    with unprivileged():
        _save(path, 2)
    assert _recovered_epoch(path) == 2


def test_an_unreadable_adapter_file_is_one_line(capsys, run_dir, glue_dir, tmp_path, read_only):  # noqa: F811
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    read_only(folder / "adapterkit_config.json", 0o000)
    with unprivileged():
        refused(capsys, "eval", "--adapter", folder, "--data-dir", glue_dir, match="permission denied")
    assert json.loads((folder / "run_config.json").read_text())["task"] == "rte"


def _ok(capsys, *args) -> bool:
    from tests.test_reliability_cli import cli

    code, err = cli(capsys, *args)
    assert code == 0, err
    return True
