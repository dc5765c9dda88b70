"""The README's Python example runs as written, and its parameter table matches `adapterkit plan`."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_example_runs_as_written(tmp_path, monkeypatch, capfd):
    from transformers.utils import logging as hf_logging

    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()  # as for a user: adapterkit itself keeps the loading quiet
    try:
        exec(compile(block, "README.md", "exec"), {})
    finally:
        hf_logging.set_verbosity(level)
    out, err = capfd.readouterr()
    assert out.split() == ["99200", "cola"]
    assert "LOAD REPORT" not in err and "Loading weights" not in err, err


@pytest.mark.parametrize("sharing, count", [("1", "1,189,632"), ("3", "396,544"), ("none", "2,379,264")])
def test_parameter_table_matches_plan(sharing, count):
    from typer.testing import CliRunner

    from adapterkit.cli import _register_all, app

    _register_all()
    assert f"| {count} |" in README.read_text()
    result = CliRunner().invoke(app, ["plan", "--model", "tests/fixtures/bert-base-uncased-config.json",
                                      "--sharing", sharing, "--bottleneck", "64"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == f"adapter parameters: {count.replace(',', '')}"
