"""Communication accounting: bytes sent inside and across nodes, messages, time.

Bytes are what this rank *sends* under the algorithms gloo runs for these collectives, all of
them rings over the group in rank order: each rank sends only to its successor, so
  all_reduce of n bytes over p ranks:      2 (p-1)/p * n
  reduce_scatter of an n-byte input:       (p-1)/p * n
  all_gather of p chunks of c bytes each:  (p-1) * c
and the bytes count as cross-node when the successor is on another node. This is a model of
the wire traffic (no TCP/IP headers); benchmarks/bench_dist_comm.py checks it against the byte
counters of a real bandwidth-limited link. A "message" is one collective call (one fused
bucket phase), the unit that fusion reduces.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch.distributed as dist

from adapterkit.io.atomic import write_json

BYTE_MODEL = "gloo ring collectives: bytes this rank sends to its ring successor (no TCP/IP headers)"


@dataclass
class CommStats:
    steps: int = 0
    tensors: int = 0  # gradient tensors communicated (summed over buckets)
    buckets: int = 0  # fused buckets communicated
    intra_bytes: int = 0
    cross_bytes: int = 0
    intra_messages: int = 0
    cross_messages: int = 0
    seconds: float = 0.0  # wall time inside gradient communication
    extra: dict = field(default_factory=dict)

    def add(self, nbytes: float, cross: bool) -> None:
        if cross:
            self.cross_bytes += int(nbytes)
            self.cross_messages += 1
        else:
            self.intra_bytes += int(nbytes)
            self.intra_messages += 1

    @contextmanager
    def timed(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start


def ring_successor_crosses(cross_ranks: tuple[int, ...], rank: int, node_of) -> bool:
    """Whether `rank`'s ring successor in a group of `cross_ranks` lives on another node."""
    if len(cross_ranks) < 2:
        return False
    i = cross_ranks.index(rank)
    nxt = cross_ranks[(i + 1) % len(cross_ranks)]
    return node_of(nxt) != node_of(rank)


def all_reduce_bytes(n: int, p: int) -> float:
    return 2 * (p - 1) / p * n if p > 1 else 0.0


def reduce_scatter_bytes(n: int, p: int) -> float:
    return (p - 1) / p * n if p > 1 else 0.0


def all_gather_bytes(chunk: int, p: int) -> float:
    return (p - 1) * chunk if p > 1 else 0.0


def summarize(per_rank: list[dict], meta: dict) -> dict:
    """Totals over ranks, per step: what comm_stats.json holds."""
    steps = max(1, max(r["steps"] for r in per_rank))
    total = lambda key: sum(r[key] for r in per_rank)  # noqa: E731
    return {
        **meta,
        "steps": steps,
        "byte_model": BYTE_MODEL,
        "per_step": {
            "intra_node_bytes": total("intra_bytes") / steps,
            "cross_node_bytes": total("cross_bytes") / steps,
            "intra_node_messages": total("intra_messages") / steps,
            "cross_node_messages": total("cross_messages") / steps,
            "buckets": per_rank[0]["buckets"] / steps,
            "tensors": per_rank[0]["tensors"] / steps,
            "comm_seconds_mean_rank": total("seconds") / len(per_rank) / steps,
        },
        "per_rank": per_rank,
    }


def write_comm_stats(stats: CommStats, path: str | Path, meta: dict, group=None) -> dict | None:
    """Gather every rank's counters; rank 0 (of `group`) writes `path` and gets the summary.
    Collective over `group`."""
    mine = asdict(stats)
    if dist.is_initialized():
        everyone: list = [None] * dist.get_world_size(group)
        dist.all_gather_object(everyone, mine, group=group)
        first = dist.get_rank(group) == 0
    else:
        everyone, first = [mine], True
    if not first:
        return None
    summary = summarize(everyone, meta)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(path), summary)
    return summary
