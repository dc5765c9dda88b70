"""Ctrl-C of a distributed launch (SIGINT to the terminal's process group): one line, a non-zero
exit, and no worker left behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.test_hub_support import server_env

WORKER = """
import os, sys, time
from adapterkit.cli import app, main

@app.command("sleep")
def sleep(ready: str) -> None:
    open(os.path.join(ready, f"ready-{os.getpid()}"), "w").close()
    time.sleep(120)

main()
"""  # like adapterkit.dist.entry: the CLI's main in each worker

LAUNCHER = """
import sys
from adapterkit.cli import app, main
from adapterkit.dist.launch import maybe_launch

@app.command("launch-sleepers")
def launch_sleepers(ready: str) -> None:
    maybe_launch(["sleep", ready], nproc=2, entry=("-c", sys.argv[1]))

main(["launch-sleepers", sys.argv[2]])
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by a dead parent's reaper) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_ctrl_c_of_a_distributed_launch_is_one_line_and_stops_every_worker(tmp_path):
    (tmp_path / "launcher.py").write_text(LAUNCHER)
    ready = tmp_path / "ready"
    ready.mkdir()
    proc = subprocess.Popen([sys.executable, str(tmp_path / "launcher.py"), WORKER, str(ready)],
                            env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len(list(ready.iterdir())) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert len(list(ready.iterdir())) == 2, proc.communicate(timeout=30)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        start = time.monotonic()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert time.monotonic() - start < 30
    assert proc.returncode != 0
    text = err.decode()
    assert "Traceback" not in text, text
    assert [line for line in text.splitlines() if line.strip()] == [
        "error: distributed run stopped by SIGINT; the workers were stopped"], text
    workers = [int(p.name.split("-")[1]) for p in ready.iterdir()]
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)
