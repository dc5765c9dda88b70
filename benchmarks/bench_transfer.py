"""Feature- and instance-based transfer on the Amazon domains, laid out like EasyTransfer's
tables 8 and 9: every method, each target domain in turn (sources: the other three), few target
labels, several seeds; accuracy and F1 on the target test split, mean and spread.

    python3 benchmarks/bench_transfer.py                       # the full grid (see defaults)
    python3 benchmarks/bench_transfer.py --targets kitchen --seeds 0   # a subset
    python3 benchmarks/bench_transfer.py --quick --model DIR   # smoke run (tests use it)

All methods of one (target, shots, seed) setting run back to back in one process, in a rotated
order, on the same data; every run is appended to a JSON-lines log as it finishes, and a
re-run with the same log skips what is already there (`--log`), so a long grid can resume.
Defaults (chosen to fit about an hour on an idle 2-core machine, see benchmarks/README.md):
all-MiniLM-L6-v2, max_seq_len 64, adapters (bottleneck 64) in the top 2 layers with the
frozen 4 below cached once per review, 300 train reviews per source domain, batch 16, lr 3e-3,
epochs 6 at 100 shots and 2 at 400 shots (42 and 50 steps of one target and one source batch),
two worker processes of one thread each.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import _data  # noqa: F401,E402  (points adapterkit at ../shared/data)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # workers import adapterkit from this checkout

FEATURE = ("target-only", "source-only", "mixed", "sequential", "fs", "ss", "ss-adv", "drss", "drss-adv")
INSTANCE = ("source-only", "target-only", "fs", "ruder-plank", "rtl", "mgtl")
METHODS = tuple(dict.fromkeys(FEATURE + INSTANCE))
LABELS = {"target-only": "Tgt-Only", "source-only": "Src-Only", "mixed": "Mixed", "sequential": "Fine-Tune (seq.)",
          "fs": "FS", "ss": "SS", "ss-adv": "SS-Adv", "drss": "DRSS", "drss-adv": "DRSS-Adv",
          "ruder-plank": "Ruder and Plank", "rtl": "RTL", "mgtl": "MGTL"}
DOMAINS = ("books", "dvd", "electronics", "kitchen")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default=",".join(DOMAINS))
    p.add_argument("--shots", default="100,400")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--epochs", default="100:6,400:2", help="target epochs per shot count, SHOTS:EPOCHS,...")
    p.add_argument("--max-seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate of adapters and heads")
    p.add_argument("--source-rows", type=int, default=300, help="train reviews per source domain")
    p.add_argument("--top-n", type=int, default=2, help="adapted top layers (the rest is cached)")
    p.add_argument("--model", default=None, help="backbone (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (settings run in parallel)")
    p.add_argument("--log", default="benchmarks/results/transfer_runs.jsonl")
    p.add_argument("--quick", action="store_true", help="tiny sizes: one target, one seed, 4 steps")
    return p.parse_args(argv)


def settings(args) -> list[tuple[str, int, int]]:
    targets, seeds = args.targets.split(","), [int(s) for s in args.seeds.split(",")]
    shots = [int(s) for s in args.shots.split(",")]
    if args.quick:
        targets, seeds, shots = targets[:1], seeds[:1], shots[:1]
    return [(t, n, s) for t in targets for n in shots for s in seeds]


def run_grid(args) -> list[dict]:
    """Run every missing (setting, method); settings go to `--jobs` worker processes."""
    log = Path(args.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() and not args.quick else []
    have = {_key(r) for r in done}
    todo = [s for s in settings(args) if any(_key(_row(args, *s, m)) not in have for m in args.methods.split(","))]
    if args.jobs > 1 and len(todo) > 1:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            new = [row for rows in pool.map(_run_setting, [(args, s, have) for s in todo]) for row in rows]
    else:
        new = [row for s in todo for row in _run_setting((args, s, have))]
    config = _config(args)
    return [r for r in done + new if r["config"] == config]


def _config(args) -> str:
    return (f"len{args.max_seq_len}-src{args.source_rows}-top{args.top_n}-ep{args.epochs}-lr{args.lr}"
            f"-{args.model or 'minilm'}")


def _row(args, target: str, shots: int, seed: int, method: str) -> dict:
    return {"target": target, "shots": shots, "seed": seed, "method": method, "config": _config(args)}


def _key(row: dict) -> tuple:
    return row["target"], row["shots"], row["seed"], row["method"], row["config"]


_LAST_TARGET = None


def _run_setting(job) -> list[dict]:
    """Every method on one (target, shots, seed), in an order rotated by the setting's index."""
    import torch

    from adapterkit.transfer import TransferSpec, run_algorithm
    from adapterkit.transfer.encoder import clear_prefix_cache

    global _LAST_TARGET
    args, (target, shots, seed), have = job
    torch.set_num_threads(args.threads)
    if target != _LAST_TARGET:  # the cached hidden states of another target's rows: free them
        clear_prefix_cache()
        _LAST_TARGET = target
    epochs = dict(tuple(map(int, pair.split(":"))) for pair in args.epochs.split(","))
    methods = args.methods.split(",")
    k = settings(args).index((target, shots, seed))
    rows = []
    for method in methods[k % len(methods):] + methods[: k % len(methods)]:
        row = _row(args, target, shots, seed, method)
        if _key(row) in have:
            continue
        spec = TransferSpec(source=[d for d in DOMAINS if d != target], target=target, target_shots=shots,
                            model=args.model, seed=seed, max_seq_len=args.max_seq_len, epochs=epochs.get(shots, 3),
                            batch_size=16, lr=args.lr, quick=args.quick,
                            options={"source_rows": args.source_rows, "top_n": args.top_n})
        cpu = time.process_time()
        result = run_algorithm(method, spec)
        row.update(test=result["test"], seconds=result["seconds"], cpu_seconds=time.process_time() - cpu,
                   steps=result.get("steps"))
        rows.append(row)
        print(f"{target:<12} {shots:>4} seed {seed}  {method:<12} acc {row['test']['accuracy']:.4f} "
              f"f1 {row['test']['f1']:.4f}  {row['seconds']:.0f} s", flush=True)
        if not args.quick:
            with open(args.log, "a") as f:  # one short line per write: appends from two workers stay whole
                f.write(json.dumps(row) + "\n")
    return rows


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.mean(values)
    spread = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {spread:.1f}"


def table(runs: list[dict], methods: tuple[str, ...], shots: int) -> str:
    """Methods x (target domains + average) of test accuracy and F1 in %, mean ± sample std over
    seeds; the average column is the mean over domains per seed, its spread across seeds; s/run is
    the median run time of the method (all methods of a setting run interleaved in one process)."""
    targets = [t for t in DOMAINS if any(r["target"] == t and r["shots"] == shots for r in runs)]
    head = "| method | " + " | ".join(f"{t} acc | {t} F1" for t in targets) + " | avg acc | avg F1 | s/run |"
    lines = [head, "|---|" + "---:|" * (2 * len(targets) + 3)]
    for method in methods:
        mine = [r for r in runs if r["method"] == method and r["shots"] == shots]
        cells = []
        for t in targets:
            cells += [cell([r["test"][m] for r in mine if r["target"] == t]) for m in ("accuracy", "f1")]
        # the average over target domains, per seed (spread across seeds of the domain average)
        seeds = sorted({r["seed"] for r in mine})
        per_seed = {m: [statistics.mean(r["test"][m] for r in mine if r["seed"] == s) for s in seeds
                        if sum(r["seed"] == s for r in mine) == len(targets)] for m in ("accuracy", "f1")}
        secs = f"{statistics.median(r['seconds'] for r in mine):.0f}" if mine else "-"
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells)
                     + f" | {cell(per_seed['accuracy'])} | {cell(per_seed['f1'])} | {secs} |")
    return "\n".join(lines)


# The paper's shape (sections 5.4, 5.5): each claim is "better beats worse" in test accuracy;
# a tuple stands for the best of those methods.
CLAIMS = (
    ("Src-Only < Tgt-Only", "target-only", "source-only"),
    ("FS > Tgt-Only", "fs", "target-only"),
    ("SS > Tgt-Only", "ss", "target-only"),
    ("DRSS(-Adv) best among feature-based", ("drss", "drss-adv"), ("fs", "ss", "ss-adv")),
    ("Ruder and Plank > TL method (FS)", "ruder-plank", "fs"),
    ("RTL > Ruder and Plank", "rtl", "ruder-plank"),
    ("MGTL > Ruder and Plank", "mgtl", "ruder-plank"),
    ("MGTL > RTL", "mgtl", "rtl"),
)


def _accuracy(runs: list[dict], methods, target: str | None, shots: int) -> float | None:
    """Mean test accuracy over seeds (and over targets when target is None); best of a tuple."""
    values = []
    for method in (methods,) if isinstance(methods, str) else methods:
        mine = [r["test"]["accuracy"] for r in runs if r["method"] == method and r["shots"] == shots
                and (target is None or r["target"] == target)]
        values.append(statistics.mean(mine) if mine else None)
    return None if None in values else max(values)


def shape(runs: list[dict]) -> str:
    """For each claim: in how many (target, shots) cells it holds, and the margin on the average."""
    cells = sorted({(r["target"], r["shots"]) for r in runs})
    all_shots = sorted({s for _, s in cells})
    lines = ["| claim | cells where it holds | " + " | ".join(f"margin, avg acc, {n} shots" for n in all_shots) + " |",
             "|---|---:|" + "---:|" * len(all_shots)]
    for label, better, worse in CLAIMS:
        pairs = [(_accuracy(runs, better, t, n), _accuracy(runs, worse, t, n)) for t, n in cells]
        pairs = [(b, w) for b, w in pairs if b is not None and w is not None]
        margins = []
        for n in all_shots:
            b, w = _accuracy(runs, better, None, n), _accuracy(runs, worse, None, n)
            margins.append(f"{100 * (b - w):+.1f}" if b is not None and w is not None else "-")
        lines.append(f"| {label} | {sum(b > w for b, w in pairs)} of {len(pairs)} | " + " | ".join(margins) + " |")
    return "\n".join(lines)


def report(runs: list[dict], args, wall: float) -> str:
    out = []
    for shots in sorted({r["shots"] for r in runs}):
        out += [f"### {shots} target shots: feature-based (table 8 layout)", "", table(runs, FEATURE, shots), "",
                f"### {shots} target shots: instance-based (table 9 layout; TL method = FS)", "",
                table(runs, INSTANCE, shots), ""]
    out += ["### The paper's shape, cell by cell (mean accuracy over seeds per target domain and shots)", "",
            shape(runs), ""]
    seconds = sum(r["seconds"] for r in runs)
    cpu = sum(r.get("cpu_seconds", 0.0) for r in runs)
    out.append(f"{len(runs)} runs: {seconds / 60:.1f} min of run time and {cpu / 60:.1f} min of CPU time (sums over "
               f"runs, one thread each); this invocation's wall time {wall / 60:.1f} min; load average at the end "
               f"{os.getloadavg()[0]:.1f}.")
    return "\n".join(out)


def main(argv=None) -> str:
    args = parse_args(argv)
    t0 = time.perf_counter()
    runs = run_grid(args)
    text = report(runs, args, time.perf_counter() - t0)
    print(text)
    return text


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
