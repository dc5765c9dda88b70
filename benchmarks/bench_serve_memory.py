"""Process RSS of the serving engine with 1, 100 and 1,000 resident adapters (all-MiniLM-L6-v2).

    python3 benchmarks/bench_serve_memory.py [--counts 1,100,1000] [--sharing 3] [--json out.json]

One adapter folder (random weights, sst2 head: BERT pooler + 2-label classifier) is saved once and
registered under N names; each name is loaded through the engine's own path (Engine.load: files
read, modules built in the model's bank, a head module of its own), so N names hold N copies,
as N different adapters would. RSS (VmRSS) is read after the backbone and one adapter have served
a prediction (baseline), then after each count; `weights` is the engine's own count of adapter +
head bytes. Target (issue #16): added RSS <= 1.1 x weights for 3-shared adapters.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import tempfile
import time
from pathlib import Path


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def settle() -> float:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back, so RSS counts live memory
    except OSError:
        pass
    return rss_mb()


def save_random_adapter(folder: Path, sharing, bottleneck: int) -> Path:
    import torch

    import adapterkit as ak
    from adapterkit.backbone import load_model
    from adapterkit.model import get_bank, head_parameters

    model = load_model(None, num_labels=2)
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=bottleneck, sharing=sharing))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in [*get_bank(model).adapters["a"].parameters(), *head_parameters(model).values()]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    ak.save_adapter(model, "a", folder, task={"type": "classification", "labels": ["negative", "positive"]})
    return folder


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--counts", default="1,100,1000")
    p.add_argument("--sharing", default="3")
    p.add_argument("--bottleneck", type=int, default=64)
    p.add_argument("--json")
    args = p.parse_args()

    from adapterkit.config import parse_sharing
    from adapterkit.serve import Engine, EngineConfig

    counts = [int(c) for c in args.counts.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_random_adapter(Path(tmp) / "adapter", parse_sharing(args.sharing), args.bottleneck)
        gc.collect()
        engine = Engine(EngineConfig(max_adapters=None, max_wait_ms=0))
        engine.load("a0", str(folder))
        engine.predict([{"adapter": "a0", "text": "a warm-up sentence"}])
        base, base_bytes = settle(), engine.cache.bytes
        per_adapter = base_bytes
        print(f"baseline (backbone + 1 adapter, after one prediction): {base:.0f} MB RSS; "
              f"one adapter + head = {per_adapter / 1e6:.3f} MB", flush=True)
        rows, loaded = [], 1
        for n in counts:
            start = time.perf_counter()
            for i in range(loaded, n):
                engine.load(f"a{i}", str(folder))
            loaded = max(loaded, n)
            rss = settle()
            weights = engine.cache.bytes - base_bytes
            added = rss - base
            row = {"resident": n, "rss_mb": rss, "added_mb": added, "weights_mb": weights / 2**20,
                   "ratio": added / (weights / 2**20) if weights else None, "load_s": time.perf_counter() - start}
            rows.append(row)
            print(json.dumps(row), flush=True)
        engine.close()
    print("\n| resident adapters | RSS (MB) | added over 1 adapter (MB) | their weights (MB) | added / weights |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['ratio']:.3f}" if r["ratio"] else "-"
        print(f"| {r['resident']} | {r['rss_mb']:.0f} | {r['added_mb']:.1f} | {r['weights_mb']:.1f} | {ratio} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "per_adapter_bytes": per_adapter, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
