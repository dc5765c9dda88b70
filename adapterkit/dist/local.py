"""Run a function on N local gloo processes, with simulated nodes: for tests and examples.

`run_local(fn, nproc, nnodes)` forks `nproc` workers that see the same environment torchrun
gives (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE), joins them into one gloo process group,
calls `fn(rank, *args)` and returns the workers' return values in rank order. A worker that
raises or dies makes it raise `AdapterkitError` naming the rank; the others are stopped.
Forking (not spawning) keeps start-up at a fraction of a second once torch is imported.
"""
from __future__ import annotations

import datetime
import multiprocessing as mp
import os
import tempfile
import time
import traceback

from adapterkit.errors import AdapterkitError


def run_local(fn, nproc: int, nnodes: int = 1, args: tuple = (), timeout: float = 120.0, pg_timeout: float = 60.0):
    """Run `fn(rank, *args)` on `nproc` processes arranged as `nnodes` nodes; list of results."""
    if nproc % nnodes:
        raise AdapterkitError(f"{nproc} processes cannot be split evenly into {nnodes} nodes")
    ctx = mp.get_context("fork")
    results = ctx.SimpleQueue()
    store = tempfile.mktemp(prefix="adapterkit-store-")
    procs = [
        ctx.Process(target=_worker, args=(fn, r, nproc, nnodes, store, args, results, pg_timeout), daemon=True)
        for r in range(nproc)
    ]
    for p in procs:
        p.start()
    try:
        return _collect(procs, results, nproc, timeout)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
        if os.path.exists(store):
            os.unlink(store)


def _collect(procs, results, nproc: int, timeout: float) -> list:
    out: dict[int, object] = {}
    deadline = time.monotonic() + timeout
    while len(out) < nproc:
        while not results.empty():
            rank, ok, value = results.get()
            if not ok:
                raise AdapterkitError(f"worker rank {rank} failed: {value}")
            out[rank] = value
        dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0) and r not in out]
        if dead:
            raise AdapterkitError(f"worker rank {dead[0]} died (exit code {procs[dead[0]].exitcode})")
        if time.monotonic() > deadline:
            missing = sorted(set(range(nproc)) - set(out))
            raise AdapterkitError(f"workers {missing} did not finish within {timeout:.0f}s")
        time.sleep(0.01)
    return [out[r] for r in range(nproc)]


def _worker(fn, rank, world, nnodes, store, args, results, pg_timeout) -> None:
    import torch
    import torch.distributed as dist

    local = world // nnodes
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank % local),
        LOCAL_WORLD_SIZE=str(local), GROUP_RANK=str(rank // local),
    )
    os.environ.pop("ADAPTERKIT_DIST_NNODES", None)
    torch.set_num_threads(1)
    try:
        dist.init_process_group(
            "gloo", init_method=f"file://{store}", rank=rank, world_size=world,
            timeout=datetime.timedelta(seconds=pg_timeout),
        )
        value = fn(rank, *args)
        dist.barrier()
        dist.destroy_process_group()
        results.put((rank, True, _plain(value)))
    except BaseException as e:  # report any failure to the parent, then exit non-zero
        results.put((rank, False, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=-3)}"))
        os._exit(1)


def _plain(value):
    """Tensors become numpy arrays: torch's pickling over a queue would share memory with a
    process that is about to exit."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value
