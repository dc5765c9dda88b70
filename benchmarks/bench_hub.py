"""Hub push/pull time and throughput: a local folder hub vs a hub server on loopback.

Two adapters:
  minilm-3shared  a real adapter saved by adapterkit on all-MiniLM-L6-v2 (hidden 384, 6 layers,
                  bottleneck 64, sharing=3: 2 adapter modules of 2*64*384+384+64 parameters) with
                  its 2-class head and a metrics.json, as `adapterkit train` writes it
  10mb            a synthetic adapter of 5 modules at hidden 1024, bottleneck 256 (~10.5 MB fp32)
Three operations, each with the client API a user calls (`push_adapter`, `pull_adapter`):
  push      new content (every repeat pushes a distinct variant, so nothing is deduplicated)
  re-push   the same content again (hashing plus metadata: one version, tags moved)
  pull      a version into a fresh folder, every file verified against its sha256
Alternatives are interleaved within each repeat, in alternating order; medians over repeats.
All traffic goes to a server this script starts on 127.0.0.1.

    python3 benchmarks/bench_hub.py [--repeats 15] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from safetensors.numpy import save_file

from adapterkit.hub import pull_adapter, push_adapter

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"


def minilm_variants(base: Path, n: int) -> list[Path]:
    """`n` saves of a sharing=3 adapter on all-MiniLM-L6-v2, each with different weights."""
    import torch

    import adapterkit as ak
    from adapterkit.backbone import load_model

    model = load_model("all-MiniLM-L6-v2", num_labels=2)
    ak.add_adapter(model, "sst2", ak.BottleneckConfig(bottleneck_dim=64, sharing=3))
    params = ak.adapter_parameters(model, "sst2")
    out = []
    for i in range(n):
        with torch.no_grad():
            for p in params.values():
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(i))
        folder = ak.save_adapter(model, "sst2", base / f"minilm-{i}")
        (folder / "metrics.json").write_text(json.dumps({"task": "sst2", "best": {"accuracy": 0.9}}))
        out.append(folder)
    return out


def synthetic_variants(base: Path, n: int, hidden: int = 1024, bottleneck: int = 256, groups: int = 5) -> list[Path]:
    rng = np.random.default_rng(0)
    weights = {}
    for g in range(groups):
        weights[f"g{g}.down.weight"] = rng.standard_normal((bottleneck, hidden), dtype=np.float32)
        weights[f"g{g}.down.bias"] = np.zeros(bottleneck, np.float32)
        weights[f"g{g}.up.weight"] = rng.standard_normal((hidden, bottleneck), dtype=np.float32)
        weights[f"g{g}.up.bias"] = np.zeros(hidden, np.float32)
    config = {"format": "adapterkit.adapter", "name": "big", "kind": "bottleneck",
              "config": {"sharing": 1, "bottleneck_dim": bottleneck},
              "base_model": {"name_or_path": "synthetic", "hidden_size": hidden, "num_layers": [groups]}}
    out = []
    for i in range(n):
        folder = base / f"big-{i}"
        folder.mkdir()
        weights["g0.down.bias"][0] = i  # distinct content per variant
        save_file(weights, str(folder / "adapterkit_weights.safetensors"))
        (folder / "adapterkit_config.json").write_text(json.dumps(config))
        out.append(folder)
    return out


def start_server(root: Path, token_file: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "hub"),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "adapterkit_hub", "--root", str(root), "--port", str(port),
                             "--token-file", str(token_file)], env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/api/v1/info", trust_env=False).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("hub server did not start")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".safetensors", ".json", ".txt"))


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def run(repeats: int, work: Path) -> dict:
    token_file = work / "token"
    token_file.write_text(TOKEN)
    proc, url = start_server(work / "server-root", token_file)
    hubs = {"folder": str(work / "folder-root"), "server": url}
    adapters = {"minilm-3shared": minilm_variants(work, repeats + 1), "10mb": synthetic_variants(work, repeats + 1)}
    times = {(a, h, op): [] for a in adapters for h in hubs for op in ("push", "re-push", "pull")}
    try:
        for r in range(repeats + 1):  # repeat 0 warms up and is not counted
            for a, variants in adapters.items():
                order = list(hubs) if r % 2 else list(reversed(hubs))
                for h in order:
                    repo = f"bench/{a}"
                    t_push, version = timed(lambda: push_adapter(variants[r], repo, hub=hubs[h], token=TOKEN))
                    t_same, again = timed(lambda: push_adapter(variants[r], repo, hub=hubs[h], token=TOKEN))
                    dest = work / f"pull-{a}-{h}-{r}"
                    t_pull, _ = timed(lambda: pull_adapter(f"{repo}@{version}", dest, hub=hubs[h]))
                    assert again == version and folder_bytes(dest) == folder_bytes(variants[r])
                    shutil.rmtree(dest)
                    if r:
                        for op, t in (("push", t_push), ("re-push", t_same), ("pull", t_pull)):
                            times[(a, h, op)].append(t)
    finally:
        proc.terminate()
        proc.wait(10)
    return summarize(times, {a: folder_bytes(v[0]) for a, v in adapters.items()}, repeats)


def summarize(times: dict, sizes: dict, repeats: int) -> dict:
    rows = []
    for (a, h, op), ts in times.items():
        med = statistics.median(ts)
        rows.append({"adapter": a, "bytes": sizes[a], "hub": h, "op": op, "median_ms": round(med * 1e3, 2),
                     "min_ms": round(min(ts) * 1e3, 2), "mb_per_s": round(sizes[a] / med / 1e6, 1)})
    med = {(r["adapter"], r["hub"], r["op"]): r["median_ms"] for r in rows}
    for r in rows:
        r["server_over_folder"] = round(med[(r["adapter"], "server", r["op"])] / med[(r["adapter"], "folder", r["op"])], 2)
    return {"repeats": repeats, "rows": rows}


def print_table(result: dict) -> None:
    print(f"{'adapter':<15} {'bytes':>11} {'op':<8} {'hub':<7} {'median ms':>10} {'min ms':>8} {'MB/s':>8} {'server/folder':>14}")
    for r in sorted(result["rows"], key=lambda r: (r["adapter"], ["push", "re-push", "pull"].index(r["op"]), r["hub"])):
        print(f"{r['adapter']:<15} {r['bytes']:>11,} {r['op']:<8} {r['hub']:<7} {r['median_ms']:>10.2f} "
              f"{r['min_ms']:>8.2f} {r['mb_per_s']:>8.1f} {r['server_over_folder']:>14.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15, help="timed repeats per cell (default 15)")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_hub_") as tmp:
        result = run(args.repeats, Path(tmp))
    result["load_average"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    result["cpus"] = os.cpu_count()
    print_table(result)
    print(f"1-minute load average before/after: {result['load_average']} on {result['cpus']} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
