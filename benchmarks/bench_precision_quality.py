"""Dev quality at equal epochs under fp32 and bf16 (and bf16 with the frozen backbone stored in
bf16), for adapters and full fine-tuning, on CoLA and SST-2, same seeds.

    OMP_NUM_THREADS=1 python3 benchmarks/bench_precision_quality.py --data-dir /work/shared/data/glue \
        --tasks cola --seeds 1,2,3 --epochs 2 --train-rows 4000 --out runs/precision-quality

Each run is `adapterkit train` (adapterkit.training.train) with the defaults (adapters: one per
layer, bottleneck 64, lr 1e-3; full fine-tuning lr 5e-5), max_seq_len 64. `--train-rows N`
trains on a seeded sample of N training rows (the same sample for every variant and seed; the
dev set is whole), so that the grid fits a shared 2-core machine. Finished runs are cached under
`--out`: an interrupted run resumes, and a second process with other `--tasks` can share the
folder; the table covers every finished run. The table pairs each bf16 run with the fp32 run of
the same seed (same data order and initialisation): the difference is the precision's effect.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

from adapterkit.training import TrainConfig, train

VARIANTS = {  # key: (label, train settings)
    "adapter-fp32": ("adapters fp32", dict()),
    "adapter-bf16": ("adapters bf16", dict(precision="bf16")),
    "adapter-bf16-bb16": ("adapters bf16, backbone weights bf16", dict(precision="bf16", backbone_dtype="bf16")),
    "full-fp32": ("full fine-tuning fp32", dict(full_finetune=True)),
    "full-bf16": ("full fine-tuning bf16", dict(full_finetune=True, precision="bf16")),
}
PAIRS = {"adapter-bf16": "adapter-fp32", "adapter-bf16-bb16": "adapter-fp32", "full-bf16": "full-fp32"}
FOLDERS = {"cola": "CoLA", "sst2": "SST-2"}


def sampled_data(data_dir: Path, task: str, rows: int | None, out: Path) -> Path:
    """A GLUE-layout folder with `rows` training rows sampled (seed 0) and the whole dev set."""
    if not rows:
        return data_dir
    folder = out / f"data-{rows}" / FOLDERS[task]
    if not (folder / "train.tsv").exists():
        lines = (data_dir / FOLDERS[task] / "train.tsv").read_text().splitlines(keepends=True)
        header, body = (lines[:1], lines[1:]) if task != "cola" else ([], lines)  # CoLA has no header
        body = random.Random(0).sample(body, min(rows, len(body)))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "dev.tsv").write_text((data_dir / FOLDERS[task] / "dev.tsv").read_text())
        (folder / "train.tsv").write_text("".join(header + body))
    return folder.parent


def run_one(task: str, name: str, seed: int, args, data_dir: Path) -> dict:
    out = Path(args.out) / f"{task}-{name}-s{seed}"
    if (out / "metrics.json").exists():
        return json.loads((out / "metrics.json").read_text())
    settings = VARIANTS[name][1]
    cfg = TrainConfig(task=task, epochs=args.epochs, seed=seed, max_seq_len=args.max_seq_len, data_dir=str(data_dir),
                      output=str(out), resume=out.exists(), **settings)
    return train(cfg, progress=False, log=lambda line: print(f"  [{task} {name} s{seed}] {line}", flush=True))


def report(out: Path, tasks: list[str], seeds: list[int]) -> None:
    for task in tasks:
        found = {(name, s): json.loads(p.read_text()) for name in VARIANTS for s in seeds
                 if (p := out / f"{task}-{name}-s{s}" / "metrics.json").exists()}
        if not found:
            continue
        metric = next(iter(found.values()))["metric"]
        print(f"\n{task} dev {metric} x100, best epoch; train seconds per run")
        print("| variant | per seed | mean ± sd | bf16 - fp32, paired (mean, per seed) | train s (mean) | vs fp32 time |")
        print("|---|---|---:|---|---:|---:|")
        for name, (label, _) in VARIANTS.items():
            runs = {s: found[name, s] for s in seeds if (name, s) in found}
            if not runs:
                continue
            score = {s: 100 * r["best"][metric] for s, r in runs.items()}
            seconds = statistics.mean(r["train_seconds"] for r in runs.values())
            values = list(score.values())
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            paired = time_ratio = "-"
            base = PAIRS.get(name)
            if base:
                diffs = [score[s] - 100 * found[base, s]["best"][metric] for s in runs if (base, s) in found]
                times = [runs[s]["train_seconds"] / found[base, s]["train_seconds"] for s in runs if (base, s) in found]
                if diffs:
                    paired = f"{statistics.mean(diffs):+.1f} ({', '.join(f'{d:+.1f}' for d in diffs)})"
                    time_ratio = f"{statistics.median(times):.2f}x"
            print(f"| {label} | {', '.join(f'{v:.1f}' for v in values)} | {statistics.mean(values):.1f} ± {sd:.1f} "
                  f"| {paired} | {seconds:.0f} | {time_ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="GLUE layout folder (CoLA/, SST-2/)")
    parser.add_argument("--tasks", default="cola,sst2")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-rows", type=int, default=4000, help="sampled training rows per task (0: all)")
    parser.add_argument("--max-seq-len", type=int, default=64)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default="runs/precision-quality")
    parser.add_argument("--report-only", action="store_true", help="print the table of finished runs")
    parser.add_argument("--emulate-bf16", action="store_true",
                        help="on a CPU without avx512_bf16/AMX (where train refuses bf16), run bf16 emulated: "
                             "the same bf16 rounding, so the quality is measured; the times are not representative")
    args = parser.parse_args()
    if args.emulate_bf16:
        import torch

        torch.cpu._is_avx512_bf16_supported = lambda: True
        print("note: bf16 emulated on this CPU (--emulate-bf16): quality numbers hold, train times do not", flush=True)
    tasks, seeds = args.tasks.split(","), [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    if not args.report_only:
        for seed in seeds:  # seed outermost: every finished seed is a complete paired comparison
            for task in tasks:
                data_dir = sampled_data(Path(args.data_dir), task, args.train_rows, out)
                for name in args.variants.split(","):
                    metrics = run_one(task, name, seed, args, data_dir)
                    print(f"{task} {name} seed {seed}: {metrics['metric']} {metrics['best'][metrics['metric']]:.4f} "
                          f"({metrics['train_seconds']:.0f} s)", flush=True)
    report(out, tasks, seeds)


if __name__ == "__main__":
    main()
