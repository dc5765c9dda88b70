"""`adapterkit serve` over loopback: requests/s and p50/p99 latency by concurrency and number of
adapters in the traffic, against one process per adapter at equal memory, where the time goes,
and the server's predictions against `adapterkit predict`.

    python3 benchmarks/bench_serve_http.py --data /work/shared/data/glue/SST-2/dev.tsv \
        [--adapters 1,64,1000] [--concurrency 1,8,64] [--dists uniform,zipf] [--seconds 6] \
        [--separate] [--quality cola=RUN_DIR,sst2=RUN_DIR --glue /work/shared/data/glue [--quality-only]] [--json out.json]

Server: `adapterkit serve` (a subprocess, all-MiniLM-L6-v2) with max(--adapters) names resident,
each its own copy of a random 3-shared adapter + sst2 head (the weights do not change the cost).
Load: a closed loop of C asyncio/httpx clients, each sending one SST-2 dev sentence per request
for an adapter drawn uniformly or by Zipf (s=1.1) over the first A names, for --seconds after a
1 s warm-up. Where the time goes comes from the server's own Prometheus histograms (means per
input: tokenization, queue wait; per step: forward time and rows).
--separate: what a user does without adapterkit, one `adapterkit serve` process per adapter. Its
RSS is measured and as many processes are started as fit in the RSS of the adapterkit server
holding all the adapters; traffic goes to the adapters they hold.
--quality: a server with the given trained adapters; `adapterkit predict --server` against
`adapterkit predict --adapter DIR` on the first 300 dev rows of each task (same --max-length).
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def sentences(path: str, n: int = 500) -> list[str]:
    with open(path, newline="") as f:
        return [r["sentence"] for r in list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:n]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(refs: dict[str, str], *flags: str, timeout: float = 1800) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args_file = Path(tempfile.mkstemp(suffix=".args")[1])
    args = [sys.executable, "-m", "adapterkit.cli", "serve", "--port", str(port), "--max-adapters", str(max(len(refs), 1)), *flags]
    for name, ref in refs.items():
        args += ["--adapter", f"{name}={ref}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "hub"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    args_file.unlink()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server not ready")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return [1 / (i + 1) ** s for i in range(n)]


async def load(urls_for: dict[str, str], names: list[str], weights: list[float] | None, texts: list[str],
               concurrency: int, seconds: float, warmup: float = 1.0) -> dict:
    """Closed loop: `concurrency` clients, each one request at a time."""
    latencies, errors = [], 0
    rng = random.Random(0)
    start = time.perf_counter()
    stop = start + warmup + seconds

    async def client(http: httpx.AsyncClient):
        nonlocal errors
        while (now := time.perf_counter()) < stop:
            name = rng.choices(names, weights)[0] if weights else rng.choice(names)
            body = {"inputs": [{"adapter": name, "text": rng.choice(texts)}]}
            r = await http.post(f"{urls_for[name]}/v1/predict", json=body)
            if now - start >= warmup:
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - now)
                else:
                    errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    lat = sorted(latencies)
    return {"requests": len(lat), "errors": errors, "req_per_s": len(lat) / seconds,
            "p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None}


def warm(url: str, names: list[str], text: str, chunk: int = 64) -> None:
    for i in range(0, len(names), chunk):
        body = {"inputs": [{"adapter": n, "text": text} for n in names[i:i + chunk]]}
        httpx.post(f"{url}/v1/predict", json=body, timeout=600).raise_for_status()


def scrape(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in family.samples:
            if s.name.endswith(("_sum", "_count")) and not s.labels.get("route"):
                out[s.name] = out.get(s.name, 0) + s.value
    return out


def where_time_goes(before: dict, after: dict) -> dict:
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    per = lambda name: 1000 * d[f"{name}_sum"] / d[f"{name}_count"] if d.get(f"{name}_count") else None  # noqa: E731
    rows = d.get("adapterkit_batch_size_sum", 0)
    steps = d.get("adapterkit_batch_size_count", 0)
    return {"tokenize_ms_per_input": per("adapterkit_tokenize_seconds"), "queue_ms_per_input": per("adapterkit_queue_seconds"),
            "step_ms": per("adapterkit_step_seconds"), "rows_per_step": rows / steps if steps else None,
            "adapters_per_step": d.get("adapterkit_batch_adapters_sum", 0) / steps if steps else None}


def make_adapter(folder: Path) -> Path:
    from bench_serve_memory import save_random_adapter

    return save_random_adapter(folder, 3, 64)


def quality(spec: str, glue: str, max_length: int, out: dict) -> None:
    refs = dict(item.split("=", 1) for item in spec.split(","))
    proc, url = start_server(refs, "--max-length", str(max_length))
    files = {"cola": ("CoLA", 3), "sst2": ("SST-2", 0)}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, run in refs.items():
                folder, col = files[name]
                rows = list(csv.reader(open(Path(glue) / folder / "dev.tsv"), delimiter="\t", quoting=csv.QUOTE_NONE))
                data = Path(tmp) / f"{name}.jsonl"
                body = rows[1:301] if name == "sst2" else rows[:300]
                data.write_text("".join(json.dumps({"sentence": r[col]}) + "\n" for r in body))
                results = {}
                for how, args in (("local", ["--adapter", run]), ("server", ["--server", url, "--adapter", name])):
                    dest = Path(tmp) / f"{name}-{how}.jsonl"
                    subprocess.run([sys.executable, "-m", "adapterkit.cli", "predict", "--input", str(data), "--output", str(dest),
                                    "--max-seq-len", str(max_length), *args], check=True, capture_output=True)
                    results[how] = [json.loads(line) for line in dest.read_text().splitlines()]
                a, b = results["local"], results["server"]
                same = sum(x["label_id"] == y["label_id"] for x, y in zip(a, b))
                diff = max(abs(x["probability"] - y["probability"]) for x, y in zip(a, b))
                out[name] = {"rows": len(a), "same_label": same, "max_prob_diff": diff}
                print(f"quality {name}: {same}/{len(a)} same labels, max |probability difference| {diff:.2e}", flush=True)
    finally:
        proc.terminate()
        proc.wait(60)


def threads(n: int | None) -> list[str]:
    return ["--threads", str(n)] if n else []


def timing(args, counts: list[int], concs: list[int], texts: list[str], report: dict, tmp: Path) -> None:
    folder = make_adapter(tmp / "adapter")
    refs = {f"a{i}": str(folder) for i in range(max(counts))}
    t0 = time.perf_counter()
    proc, url = start_server(refs, "--max-wait-ms", args.max_wait_ms, "--max-length", str(args.max_length), *threads(args.threads))
    warm(url, list(refs), texts[0])  # every adapter resident before any cell is timed
    server_rss = rss_mb(proc.pid)
    print(f"server with {len(refs)} adapters ready in {time.perf_counter() - t0:.0f} s, RSS {server_rss:.0f} MB", flush=True)
    try:
        for a in counts:
            for dist in args.dists.split(","):
                if a == 1 and dist == "zipf":
                    continue
                names = list(refs)[:a]
                weights = zipf_weights(a) if dist == "zipf" else None
                for c in concs:
                    before = scrape(url)
                    cell = asyncio.run(load({n: url for n in names}, names, weights, texts, c, args.seconds))
                    cell.update(adapters=a, dist=dist, concurrency=c, **where_time_goes(before, scrape(url)))
                    report["cells"].append(cell)
                    print(json.dumps(cell), flush=True)
    finally:
        proc.terminate()
        proc.wait(120)
    report["server_rss_mb"] = server_rss
    if args.separate:
        one, one_url = start_server({"a0": str(folder)}, "--max-wait-ms", args.max_wait_ms, "--max-length", str(args.max_length),
                                    *threads(1 if args.threads else None))
        asyncio.run(load({"a0": one_url}, ["a0"], None, texts, 1, 1))
        per = rss_mb(one.pid)
        k = max(1, int(server_rss // per))
        procs = [(one, one_url)] + [start_server({f"a{i}": str(folder)}, "--max-wait-ms", args.max_wait_ms,
                                                  "--max-length", str(args.max_length), *threads(1 if args.threads else None))
                                     for i in range(1, k)]
        try:
            urls = {f"a{i}": u for i, (_, u) in enumerate(procs)}
            for c in concs:
                cell = asyncio.run(load(urls, list(urls), None, texts, c, args.seconds))
                cell.update(processes=k, process_rss_mb=per, concurrency=c)
                report["separate"].append(cell)
                print("separate", json.dumps(cell), flush=True)
        finally:
            for pr, _ in procs:
                pr.terminate()
                pr.wait(120)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--adapters", default="1,64,1000")
    p.add_argument("--concurrency", default="1,8,64")
    p.add_argument("--dists", default="uniform,zipf")
    p.add_argument("--seconds", type=float, default=6)
    p.add_argument("--max-wait-ms", default="5")
    p.add_argument("--separate", action="store_true")
    p.add_argument("--quality")
    p.add_argument("--quality-only", action="store_true", help="only the --quality check (no timing: no lock needed)")
    p.add_argument("--glue")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--threads", type=int, help="torch threads of the adapterkit server (default: torch's choice); "
                   "with it, each --separate process gets one thread (they are as many processes as fit in memory)")
    p.add_argument("--json")
    args = p.parse_args()
    texts = sentences(args.data)
    counts = [int(x) for x in args.adapters.split(",")]
    concs = [int(x) for x in args.concurrency.split(",")]
    report: dict = {"args": vars(args), "cells": [], "separate": [], "quality": {}}
    if not args.quality_only:
        with tempfile.TemporaryDirectory() as tmp:
            timing(args, counts, concs, texts, report, Path(tmp))
    if args.quality:
        quality(args.quality, args.glue, args.max_length, report["quality"])
    print_tables(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def print_tables(report: dict) -> None:
    f = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    print("\n| adapters | traffic | concurrency | req/s | p50 ms | p99 ms | errors | rows/step | adapters/step | step ms | queue ms | tokenize ms |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in report["cells"]:
        print(f"| {c['adapters']} | {c['dist']} | {c['concurrency']} | {f(c['req_per_s'])} | {f(c['p50_ms'], 0)} | {f(c['p99_ms'], 0)} | "
              f"{c['errors']} | {f(c['rows_per_step'])} | {f(c['adapters_per_step'])} | {f(c['step_ms'], 0)} | "
              f"{f(c['queue_ms_per_input'], 0)} | {f(c['tokenize_ms_per_input'], 2)} |")
    if report["separate"]:
        print("\n| one process per adapter | processes (adapters served) | RSS each MB | concurrency | req/s | p50 ms | p99 ms |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for c in report["separate"]:
            print(f"| | {c['processes']} | {c['process_rss_mb']:.0f} | {c['concurrency']} | {f(c['req_per_s'])} | "
                  f"{f(c['p50_ms'], 0)} | {f(c['p99_ms'], 0)} |")


if __name__ == "__main__":
    main()
