"""Trunk caching: epoch times with adapters on the top N of 6 layers, with and without the cache
(adapterkit.trunk_cache), epochs interleaved in one process, and the end-to-end `adapterkit train`
time of the same runs.

    flock /work/notes/bench.lock python3 benchmarks/bench_trunk_cache.py \
        --data-dir /work/shared/data/glue --rows 1024 --epochs 3 --tops 2,3

Part 1 builds, per top N, two identical models (same seed) and trains them epoch by epoch over
the first --rows SST-2 training rows (length-grouped shuffled batches, as `adapterkit train`),
alternating cached / uncached each epoch (each with its own RNG stream, so the head's dropout
draws the same masks in both); it prints every epoch's seconds, the ratio and the largest gap
between the two runs' step losses (0 up to fp32 rounding). Part 2 runs
`adapterkit.training.train` (what `adapterkit train` calls) on the same rows with --epochs,
once uncached and once with --trunk-cache, and prints the wall time, the summed epoch times
from metrics.json and the dev accuracy of both.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch


def _subset(data_dir: str, rows: int, folder: Path) -> str:
    """A GLUE folder holding SST-2 with its first `rows` training rows (and the full dev split)."""
    (folder / "SST-2").mkdir(parents=True)
    lines = (Path(data_dir) / "SST-2" / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "SST-2" / "train.tsv").write_text("".join(lines[:rows + 1]), encoding="utf-8")
    shutil.copy(Path(data_dir) / "SST-2" / "dev.tsv", folder / "SST-2" / "dev.tsv")
    return str(folder)


def epochs_interleaved(args, data_dir: str) -> None:
    import adapterkit as ak
    from adapterkit import backbone
    from adapterkit.data.encode import batches
    from adapterkit.loop import LocalRunner
    from adapterkit.tasks.presets import glue_task_data
    from adapterkit.trunk_cache import TrunkCache

    tokenizer = backbone.load_tokenizer(args.model)
    task = glue_task_data("sst2", tokenizer, args.max_seq_len, data_dir)
    print(f"\n| adapters | epoch | uncached (s) | cached (s) | cached / uncached | max loss gap |")
    print("|---|---:|---:|---:|---:|---:|")
    for top in args.tops:
        runs = {}
        for cached in (False, True):
            torch.manual_seed(0)
            model = backbone.load_model(args.model, num_labels=2)
            ak.add_adapter(model, "a", ak.BottleneckConfig(reduction_factor=16, top_n=top))
            ak.train_adapter(model, "a")
            runner = LocalRunner(model, trunk_cache=TrunkCache(model) if cached else None)
            optimizer = torch.optim.AdamW(runner.parameters(), lr=1e-3)
            runs[cached] = (model, runner, optimizer)
        rng = {cached: torch.get_rng_state() for cached in runs}  # each run its own stream: same dropout masks
        for epoch in range(args.epochs):
            seconds, losses = {}, {}
            for cached, (model, runner, optimizer) in runs.items():
                torch.set_rng_state(rng[cached])
                model.train()
                losses[cached] = []
                t0 = time.perf_counter()
                for _, batch in batches(task.train.rows, args.batch_size, task.collate, seed=epoch):
                    losses[cached].append(runner.step(batch))
                    runner.optimizer_step(optimizer)
                    optimizer.zero_grad(set_to_none=True)
                seconds[cached] = time.perf_counter() - t0
                rng[cached] = torch.get_rng_state()
            gap = max(abs(a - b) for a, b in zip(losses[False], losses[True]))
            print(f"| top {top} of 6 | {epoch + 1} | {seconds[False]:.1f} | {seconds[True]:.1f} | "
                  f"{seconds[True] / seconds[False]:.2f}x | {gap:.1e} |", flush=True)
        runs[True][1].trunk_cache.close()


def end_to_end(args, data_dir: str, work: Path) -> None:
    from adapterkit.config import BottleneckConfig
    from adapterkit.training import TrainConfig, train

    print(f"\n| adapters | run | wall (s) | sum of epoch times (s) | dev accuracy |")
    print("|---|---|---:|---:|---:|")
    for top in args.tops:
        for cached in (False, True):
            cfg = TrainConfig(task="sst2", model=args.model, data_dir=data_dir, epochs=args.epochs,
                              batch_size=args.batch_size, max_seq_len=args.max_seq_len,
                              output=str(work / f"top{top}-{cached}"), trunk_cache=cached,
                              adapter=BottleneckConfig(reduction_factor=16, top_n=top))
            t0 = time.perf_counter()
            metrics = train(cfg, progress=False, log=lambda *a: None)
            wall = time.perf_counter() - t0
            epochs = " + ".join(f"{e['train_seconds']:.1f}" for e in metrics["epochs"])
            print(f"| top {top} of 6 | {'--trunk-cache' if cached else 'uncached'} | {wall:.1f} | "
                  f"{metrics['train_seconds']:.1f} ({epochs}) | {metrics['best']['accuracy']:.4f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="GLUE folder (with SST-2/)")
    parser.add_argument("--model", default=None, help="backbone (default: bundled all-MiniLM-L6-v2, 6 layers)")
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-len", type=int, default=64)
    parser.add_argument("--tops", type=lambda s: [int(x) for x in s.split(",")], default=[2, 3])
    parser.add_argument("--part", choices=("epochs", "train", "both"), default="both")
    args = parser.parse_args()
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
          f"SST-2 first {args.rows} rows, batch {args.batch_size}, max_seq_len {args.max_seq_len}, {args.epochs} epochs")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = _subset(args.data_dir, args.rows, Path(tmp) / "glue")
        if args.part in ("epochs", "both"):
            epochs_interleaved(args, data_dir)
        if args.part in ("train", "both"):
            end_to_end(args, data_dir, Path(tmp) / "runs")


if __name__ == "__main__":
    main()
