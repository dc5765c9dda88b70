"""CoLA dev Matthews correlation: full fine-tuning vs adapters with per-layer, 3-shared and
per-site ("none") sharing, on all-MiniLM-L6-v2, same epochs and seeds.

    python3 benchmarks/bench_cola_quality.py --seeds 1,2,3 --epochs 3 --out runs/quality

Each run is `adapterkit train` (adapterkit.training.train) with the settings below; the table
gives mean and standard deviation over seeds of the best dev epoch, and the run time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from adapterkit.config import BottleneckConfig
from adapterkit.training import TrainConfig, train

import _data  # noqa: F401,E402  (points adapterkit at ../shared/data)

VARIANTS = {  # key: (label, train settings, the reference report's table 2: BERT-base, GLUE test set)
    "full": ("full fine-tuning", dict(full_finetune=True), 52.1),
    "sharing1": ("adapters, per layer (sharing 1)", dict(adapter=BottleneckConfig(bottleneck_dim=64, sharing=1)), 55.2),
    "sharing3": ("adapters, 3-shared (sharing 3)", dict(adapter=BottleneckConfig(bottleneck_dim=64, sharing=3)), 53.5),
    "none": ("adapters, per site (sharing none)", dict(adapter=BottleneckConfig(bottleneck_dim=64, sharing="none")), 55.6),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--adapter-lr", type=float, default=1e-3)
    parser.add_argument("--full-lr", type=float, default=5e-5)
    parser.add_argument("--max-seq-len", type=int, default=64)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default="runs/quality")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, list[dict]] = {}
    for name in args.variants.split(","):
        for seed in seeds:
            _, settings, _ = VARIANTS[name]
            lr = args.full_lr if settings.get("full_finetune") else args.adapter_lr
            out = Path(args.out) / f"{name}-s{seed}"
            cfg = TrainConfig(task="cola", epochs=args.epochs, lr=lr, seed=seed, max_seq_len=args.max_seq_len,
                              output=str(out), resume=out.exists(), **settings)
            t0 = time.perf_counter()
            metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else \
                train(cfg, progress=False, log=lambda line: print(f"  [{name} s{seed}] {line}", flush=True))
            results.setdefault(name, []).append({**metrics, "wall": time.perf_counter() - t0})
            print(f"{name} seed {seed}: MCC {metrics['best']['matthews_correlation']:.4f}", flush=True)
    print(f"\nCoLA dev, all-MiniLM-L6-v2, {args.epochs} epochs, seeds {args.seeds}, max_seq_len {args.max_seq_len}")
    print("| variant | trainable params | dev MCC x100 (mean ± sd) | per seed | train time per run (s) | report (BERT-base, test) |")
    print("|---|---:|---:|---|---:|---:|")
    for name, runs in results.items():
        mcc = [100 * r["best"]["matthews_correlation"] for r in runs]
        sd = statistics.stdev(mcc) if len(mcc) > 1 else 0.0
        seconds = statistics.mean(r["train_seconds"] for r in runs)
        label, _, report = VARIANTS[name]
        print(f"| {label} | {runs[0]['trainable_parameters']:,} | {statistics.mean(mcc):.1f} ± {sd:.1f} | "
              f"{', '.join(f'{m:.1f}' for m in mcc)} | {seconds:.0f} | {report} |")


if __name__ == "__main__":
    main()
