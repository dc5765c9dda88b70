"""Progress off a terminal: plain lines with step, loss, throughput and ETA (adapterkit.progress)."""
import io
import os
import subprocess
import sys

from adapterkit.progress import LineReporter, duration, progress


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_line_reporter_prints_every_interval_with_step_loss_rate_and_eta():
    out, clock = io.StringIO(), _Clock()
    reporter = LineReporter("epoch 1/3", 100, out, every=30, clock=clock)
    for step in range(100):
        clock.now += 1.0  # one step a second, 32 examples a step
        reporter.update(loss=1.0 / (step + 1), examples=32)
    reporter.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4  # at 30, 60 and 90 s, and the closing line
    assert lines[0] == "epoch 1/3: step 30/100 (30%)  loss 0.0333  32.0 ex/s  elapsed 30s  ETA 1m10s"
    assert lines[-1].startswith("epoch 1/3: step 100/100 (100%)") and lines[-1].endswith("done")


def test_short_work_prints_nothing_and_disabled_prints_nothing():
    out = io.StringIO()
    with progress("eval", 5, stream=out, every=30) as bar:
        for _ in range(5):
            bar(examples=8)
    with progress("eval", 5, stream=out, every=0, enabled=False) as bar:
        bar()
    assert out.getvalue() == ""


def test_without_examples_the_rate_is_steps_per_second():
    out, clock = io.StringIO(), _Clock()
    reporter = LineReporter("distill (tinybert)", None, out, every=0, clock=clock)
    clock.now = 4.0
    reporter.update(advance=2, loss=0.5)
    assert out.getvalue() == "distill (tinybert): step 2  loss 0.5000  0.50 steps/s  elapsed 4s\n"
    assert duration(3725) == "1h02m" and duration(65) == "1m05s"


def test_cli_train_piped_shows_progress_lines_and_no_loading_noise(tiny_bert_dir, glue_dir, tmp_path):
    env = {**os.environ, "ADAPTERKIT_PROGRESS_EVERY": "0", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("TRANSFORMERS_VERBOSITY", None)  # the CLI quiets transformers by itself
    result = subprocess.run(
        [sys.executable, "-m", "adapterkit.cli", "train", "--task", "cola", "--model", str(tiny_bert_dir),
         "--data-dir", str(glue_dir), "--output", str(tmp_path / "run"), "--max-steps", "5", "--batch-size", "8",
         "--max-seq-len", "32", "--bottleneck", "8"],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("epoch 1/1: step ")]
    assert [line.split()[3] for line in lines[:5]] == ["1/5", "2/5", "3/5", "4/5", "5/5"]  # 40 rows / batch 8
    assert all("loss " in line and " ex/s" in line for line in lines)
    assert "ETA" in lines[0]
    noise = result.stdout + result.stderr
    assert "Loading weights" not in noise and "LOAD REPORT" not in noise

