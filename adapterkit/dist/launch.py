"""Start workers through torchrun's own launcher, or join the job torchrun already started.

The CLI calls `maybe_launch(argv, nproc, nnodes)` first thing: outside torchrun with nproc > 1
it runs the same command line in `nproc` workers through `torch.distributed.launcher`
(what `torchrun --standalone` does, in this process) and returns True once they all
succeeded; the caller then exits. Inside a worker (torchrun's RANK/WORLD_SIZE/LOCAL_WORLD_SIZE
are set), or with nproc == 1, it returns False and the caller trains. On real nodes users run
`torchrun --nnodes M --nproc-per-node L ... -m adapterkit.dist.entry train ...` themselves and
every process takes the second path.

A worker that dies makes torchrun's agent stop the others at once; the failure comes back as
one AdapterkitError naming the rank and its exit code or signal. Collectives that wait on a
peer another agent could not stop (real multi-node) give up after the process-group timeout
(`timeout_s`, $ADAPTERKIT_DIST_TIMEOUT, default 600 s).

A worker that stops responding without dying (SIGSTOP, a frozen process) is caught by a
heartbeat: every worker's background thread touches a file in a folder the launcher watches
once a second; a worker silent for `stall_s` ($ADAPTERKIT_DIST_STALL_TIMEOUT, default 30 s) is
killed, which fails the job as above, with a message saying it stalled. Worst case from the
stall to the error: stall_s + about 2 s.
"""
from __future__ import annotations

import datetime
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid

from adapterkit.errors import AdapterkitError

TIMEOUT_ENV = "ADAPTERKIT_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
STALL_ENV = "ADAPTERKIT_DIST_STALL_TIMEOUT"
DEFAULT_STALL_S = 30.0
HEARTBEAT_ENV = "ADAPTERKIT_DIST_HEARTBEAT_DIR"
HEARTBEAT_S = 1.0
CLI_ENTRY = ("-m", "adapterkit.dist.entry")


def under_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"))


def maybe_launch(
    argv: list[str],
    nproc: int,
    nnodes: int = 1,
    timeout_s: float | None = None,
    entry: tuple[str, ...] = CLI_ENTRY,
    stall_s: float | None = None,
) -> bool:
    """Launch `python <entry> <argv>` on `nproc` local workers simulating `nnodes` nodes.

    Returns False when the caller should do the work itself (already a worker, or nproc == 1),
    True when workers ran it to success. Raises AdapterkitError when a worker failed."""
    if nproc < 1 or nnodes < 1 or nproc % nnodes:
        raise AdapterkitError(f"--nproc {nproc} must be a positive multiple of --nnodes {nnodes}")
    if under_torchrun() or nproc == 1:
        return False
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
    )
    watchdog = Watchdog(stall_s or stall_timeout_s())
    env = {"ADAPTERKIT_DIST_NNODES": str(nnodes), TIMEOUT_ENV: str(timeout_s or dist_timeout_s()),
           HEARTBEAT_ENV: watchdog.folder}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # torchrun's agent warns as it stops workers; our one-line error says it: quiet it meanwhile
    agent_logs = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
                  if name.startswith("torch.distributed.elastic")]
    levels = [log.level for log in agent_logs]
    for log in agent_logs:
        log.setLevel(logging.ERROR)
    try:
        watchdog.start()
        elastic_launch(config, entrypoint=sys.executable)("-u", *entry, *argv)
    except ChildFailedError as e:
        raise AdapterkitError(watchdog.describe() or describe_failure(e)) from None
    except SignalException as e:
        raise AdapterkitError(f"distributed run stopped by {e.sigval.name}; the workers were stopped") from None
    finally:
        for log, level in zip(agent_logs, levels):
            log.setLevel(level)
        watchdog.stop()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return True


class Watchdog:
    """In the launcher: kills a worker whose heartbeat file has not been touched for `stall_s`."""

    def __init__(self, stall_s: float):
        self.stall_s = stall_s
        self.folder = tempfile.mkdtemp(prefix="adapterkit-heartbeat-")
        self.killed: tuple[int, float] | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="adapterkit-watchdog")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        shutil.rmtree(self.folder, ignore_errors=True)

    def describe(self) -> str | None:
        if self.killed is None:
            return None
        rank, silent = self.killed
        return (f"distributed run failed: worker rank {rank} stopped responding (no heartbeat for {silent:.0f} s: "
                f"stopped or hung) and was killed after {STALL_ENV}={self.stall_s:g} s; the other workers were stopped")

    def _watch(self) -> None:
        while not self._done.wait(HEARTBEAT_S):
            for name in os.listdir(self.folder):
                if not name.startswith("rank"):
                    continue
                path = os.path.join(self.folder, name)
                try:
                    silent = time.time() - os.stat(path).st_mtime
                    pid = int(open(path).read() or 0)
                except (OSError, ValueError):
                    continue
                if silent > self.stall_s and pid > 0 and self.killed is None:
                    self.killed = (int(name[4:]), silent)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass


def start_heartbeat() -> None:
    """In a worker launched by maybe_launch: touch this rank's heartbeat file every second."""
    folder = os.environ.get(HEARTBEAT_ENV)
    if not folder or not os.path.isdir(folder) or getattr(start_heartbeat, "started", False):
        return
    start_heartbeat.started = True
    path = os.path.join(folder, f"rank{os.environ.get('RANK', '0')}")
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, path)

    def beat() -> None:
        while True:
            try:
                os.utime(path)
            except OSError:
                return  # the launcher is gone
            time.sleep(HEARTBEAT_S)
    threading.Thread(target=beat, daemon=True, name="adapterkit-heartbeat").start()


def stall_timeout_s() -> float:
    return _seconds_from_env(STALL_ENV, DEFAULT_STALL_S)


def _seconds_from_env(name: str, default: float) -> float:
    """A positive, finite number of seconds from the environment variable `name` (unset: `default`)."""
    value = os.environ.get(name, "")
    try:
        seconds = float(value) if value else default
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise AdapterkitError(f"{name}={value!r}: expected a positive number of seconds")
    return seconds


def describe_failure(error) -> str:
    """One line from torchrun's ChildFailedError: which rank failed first, and how."""
    rank, failure = min(error.failures.items(), key=lambda kv: _collateral(kv[1]))
    how = f"was killed by {failure.signal_name()}" if failure.exitcode < 0 else f"exited with code {failure.exitcode}"
    detail = _message(failure)
    others = len(error.failures) - 1
    tail = f"; {others} other worker(s) failed after it" if others else "; the other workers were stopped"
    return f"distributed run failed: worker rank {rank} {how}{': ' + detail if detail else ''}{tail}"


_PEER_ERRORS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Timed out")


def _collateral(failure) -> tuple:
    """Sort key, the cause first: a worker killed by a signal other than the agent's SIGTERM
    (its exit can be recorded after a survivor's), then errors that are not a survivor's peer
    error or SIGTERM stop; then by time."""
    killed = failure.exitcode < 0 and failure.signal_name() != "SIGTERM"
    stopped = failure.exitcode < 0 and failure.signal_name() == "SIGTERM"
    peer = any(p in _message(failure) for p in _PEER_ERRORS)
    return (not killed, stopped, peer, failure.timestamp)


def _message(failure) -> str:
    message = failure.message if isinstance(failure.message, str) else failure.message.get("message", "")
    lines = (message or "").strip().splitlines()
    if not lines or "Signal" in lines[-1] or "<N/A>" in lines[-1] or "To enable traceback" in lines[-1]:
        return ""
    return lines[-1]


def dist_timeout_s() -> float:
    return _seconds_from_env(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)


def init_distributed(backend: str | None = None, timeout_s: float | None = None) -> None:
    """Join the process group torchrun prepared (env://), once. gloo on CPU, nccl on GPUs."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    start_heartbeat()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    timeout = datetime.timedelta(seconds=timeout_s or dist_timeout_s())
    dist.init_process_group(backend, timeout=timeout)


def is_main_process() -> bool:
    """Rank 0 writes outputs and logs."""
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0
