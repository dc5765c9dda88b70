"""The one atomic writer: old or new content, never half; files get the umask's mode, not 0600."""
import os
import stat

import pytest

from adapterkit.io.atomic import atomic_write, file_mode, write_json


def test_new_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == file_mode()
    assert file_mode() & 0o044, "a teammate (group/other) can read what adapterkit writes under a 022 umask"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"x": 1})

    def broken(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text().strip().startswith("{") and '"x": 1' in target.read_text()
    assert sorted(os.listdir(tmp_path)) == ["a.json"]
