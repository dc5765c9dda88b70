"""CoLA: which `adapterkit distill` settings give a useful student of the quickstart's teacher.

    adapterkit train --task cola --sharing 3                     # the teacher, runs/cola-sharing3-s42
    python3 benchmarks/bench_distill_cola.py --teacher runs/cola-sharing3-s42 --out runs/distill-bench

Each variant is one `adapterkit distill` run (a subprocess, as a user runs it) with the options
below on top of the command's defaults; the table gives the student's and the teacher's dev
Matthews correlation, the student's size and the wall time. Finished variants are read back from
`--out`, so an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {  # name: extra `adapterkit distill` options
    "tinybert-2": ["--method", "tinybert", "--student-layers", "2"],  # the README's example before issue 20
    "vanilla-2": ["--method", "vanilla", "--student-layers", "2"],
    "vanilla-3": ["--method", "vanilla", "--student-layers", "3"],
    "vanilla-4": ["--method", "vanilla", "--student-layers", "4"],
    "pkd-3": ["--method", "pkd", "--student-layers", "3"],
    "vanilla-3-lr5e-5": ["--method", "vanilla", "--student-layers", "3", "--lr", "5e-5"],
    "vanilla-3-alpha0.2": ["--method", "vanilla", "--student-layers", "3", "--alpha", "0.2"],
}


def run(name: str, teacher: Path, out: Path, extra: list[str]) -> dict:
    folder = out / name
    if (folder / "metrics.json").exists():
        return json.loads((folder / "metrics.json").read_text()) | {"wall": None}
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "adapterkit.cli", "distill", "--teacher", str(teacher), "--output", str(folder), *extra]
    subprocess.run(cmd, check=True)
    return json.loads((folder / "metrics.json").read_text()) | {"wall": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", required=True, type=Path)
    parser.add_argument("--out", default="runs/distill-bench", type=Path)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    rows = []
    for name in args.variants.split(","):
        metrics = run(name, args.teacher, args.out, VARIANTS[name])
        rows.append((name, metrics))
        print(f"{name}: student MCC {metrics['student_dev']['matthews_correlation']:.4f}  "
              f"teacher {metrics['teacher_dev']['matthews_correlation']:.4f}", flush=True)
    print("\n| variant | student layers | student params | student dev MCC | teacher dev MCC | train time (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, m in rows:
        print(f"| {name} | {m['student_layers']} | {m['params']['student']:,} | "
              f"{m['student_dev']['matthews_correlation']:.4f} | {m['teacher_dev']['matthews_correlation']:.4f} | "
              f"{m['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
