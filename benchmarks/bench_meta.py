"""Meta-learned adapter starts vs fresh adapters with little target data (EasyTransfer tables 11, 12).

Table 11 (MetaFT): for each Amazon domain, MetaFT meta-trains an adapter (and head) on the three
other domains (leave-one-out); then the held-out domain is fine-tuned with 5%, 10% and 20% of
its 1400 training rows, from the meta-learned start ("Yes") and from a fresh adapter ("No").
Table 12 (Meta-DTL): a GLUE target (--glue-target, default RTE with 1%, 5% and 20% of its
training rows) helped by the other three of MRPC, SST-2, CoLA, RTE (other label sets):
single-task fine-tuning (fresh adapter) vs the MetaFT start (the three tasks treated as domains
of one task, one shared head) vs the Meta-DTL start (per-task heads).
Meta-learning runs once per held-out domain / method (seed 0); every fine-tuning runs for each
seed, the arms of one (domain, ratio, seed) interleaved in one process. Accuracy on the test
split (Amazon: the fixed 400-row test split; RTE: GLUE dev, 277 rows; SST-2: the fixed
436-row half of GLUE dev that `load_domain_splits` calls test).

    OMP_NUM_THREADS=1 python benchmarks/bench_meta.py --part metaft  --out runs/bench_meta
    OMP_NUM_THREADS=1 python benchmarks/bench_meta.py --part metadtl --out runs/bench_meta
    OMP_NUM_THREADS=1 python benchmarks/bench_meta.py --part metaft --ablation --ratios-amazon 0.05,0.10 --out runs/bench_meta
    OMP_NUM_THREADS=1 python benchmarks/bench_meta.py --part metadtl --glue-target sst2 \
        --ratios-glue 0.0005,0.002,0.01 --out runs/bench_meta
    python benchmarks/bench_meta.py --quick        # a few minutes: tiny sizes, checks the pipeline

Results are appended to <out>/records.jsonl as they come (a rerun skips what is there) and the
tables are printed as markdown at the end (`--report` prints them without running).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import _data  # noqa: F401,E402  (points adapterkit at ../shared/data)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

AMAZON = ("books", "dvd", "electronics", "kitchen")
GLUE = ("mrpc", "sst2", "cola", "rte")
# starts that are not an algorithm of their own: name -> (algorithm, MetaOptions overrides)
VARIANTS = {"multi": ("metaft", {"weighting": "uniform", "confusion_weight": 0.0})}
AMAZON_TRAIN = 1400
GLUE_TRAIN = {"mrpc": 3668, "sst2": 67349, "cola": 8551, "rte": 2490}  # rows in the GLUE train files


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("metaft", "metadtl", "all"), default="all")
    p.add_argument("--out", default="runs/bench_meta", help="folder for records.jsonl and meta adapters")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--domains", default=",".join(AMAZON))
    p.add_argument("--ratios-amazon", default="0.05,0.10,0.20")
    p.add_argument("--glue-target", choices=GLUE, default="rte", help="table 12's target; the other three are sources")
    p.add_argument("--ratios-glue", default="0.01,0.05,0.20", help="table 12's shares of the target's training rows")
    p.add_argument("--meta-steps", type=int, default=150)
    p.add_argument("--epochs", type=int, default=8, help="fine-tuning passes over the target rows")
    p.add_argument("--min-steps", type=int, default=20, help="fine-tuning steps at least")
    p.add_argument("--max-source-rows", type=int, default=1000)
    p.add_argument("--seq-amazon", type=int, default=64)
    p.add_argument("--seq-glue", type=int, default=128)
    p.add_argument("--model", default=None, help="backbone (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (32 rows per split, 2 meta steps, 4 fine-tuning steps)")
    p.add_argument("--baselines", action="store_true", help="table 11 also fine-tunes Reptile and first-order MAML starts")
    p.add_argument("--ablation", action="store_true", help="table 11 also fine-tunes a 'multi' start: MetaFT's training "
                                                          "with every row weighted 1 and no domain corruption")
    p.add_argument("--report", action="store_true", help="only print the tables from <out>/records.jsonl")
    return p.parse_args()


class Records:
    """records.jsonl: one line per fine-tuning run or meta-training, keyed for resuming (and sharing the
    grid between processes that take different seeds or parts)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def rows(self) -> list[dict]:  # read afresh: several processes may share one file
        return [json.loads(line) for line in self.path.read_text().splitlines()] if self.path.exists() else []

    def has(self, key: dict) -> bool:
        return any(all(r.get(k) == v for k, v in key.items()) for r in self.rows)

    def add(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


def spec_for(args, target: str, source: list[str], seed: int, shots: int | None, seq: int):
    from adapterkit.transfer import TransferSpec

    return TransferSpec(source=source, target=target, target_shots=shots, model=args.model, seed=seed,
                        max_seq_len=seq, batch_size=16, lr=1e-3, epochs=args.epochs, quick=args.quick)


def finetune_steps(args, shots: int) -> int:
    return max(args.min_steps, -(-shots // 16) * args.epochs)


def meta_start(args, records: Records, algorithm: str, target: str, sources: list[str], seq: int, tokenizer,
               cache: dict) -> str:
    """Meta-train once (seed 0) and save the start; returns its folder."""
    from adapterkit.io import save_adapter
    from adapterkit.transfer.meta import ADAPTER, MetaOptions, meta_learn, new_model
    from adapterkit.transfer.meta_tasks import load_meta_task
    from adapterkit.toolkit.features import frozen_features

    folder = Path(args.out) / "starts" / f"{algorithm}-{target}"
    key = {"kind": "meta", "algorithm": algorithm, "target": target}
    if records.has(key) and (folder / "adapterkit_config.json").exists():
        return str(folder)
    spec = spec_for(args, target, sources, 0, None, seq)
    learner, overrides = VARIANTS.get(algorithm, (algorithm, {}))
    opts = MetaOptions(meta_steps=args.meta_steps, max_source_rows=args.max_source_rows, **overrides)
    tasks = [load_meta_task(n, spec, tokenizer, args.max_source_rows) for n in sources]
    t0 = time.perf_counter()
    model = new_model(spec, 2)
    emb = None
    if learner in ("metaft", "metadtl"):  # the frozen-backbone embeddings, computed once per source
        for task in tasks:
            if task.name not in cache:
                cache[task.name] = frozen_features(model, task.train, tokenizer.pad_token_id or 0)
        emb = [cache[task.name] for task in tasks]
    info, include_head = meta_learn(learner, model, tasks, spec, opts, tokenizer.pad_token_id or 0, emb)
    save_adapter(model, ADAPTER, folder, include_head=include_head)
    history = info.get("history", {})
    records.add({**key, "sources": sources, "seconds": time.perf_counter() - t0, "steps": info["steps"],
                 "task_loss_first10": _mean(history.get("task", [])[:10]), "task_loss_last10": _mean(history.get("task", [])[-10:]),
                 "weights": info.get("weights")})
    return str(folder)


def finetune_arms(args, records: Records, table: str, target: str, ratio: float, n_train: int, seed: int,
                  arms: dict[str, str | None], seq: int, tokenizer) -> None:
    from adapterkit.transfer.meta import MetaOptions, finetune_and_score
    from adapterkit.transfer.meta_tasks import load_meta_task

    shots = max(2, round(ratio * n_train))
    spec = spec_for(args, target, [], seed, shots, seq)
    task = load_meta_task(target, spec, tokenizer)
    opts = MetaOptions(finetune_steps=finetune_steps(args, shots))
    for arm, start in arms.items():  # the alternatives of one setting run back to back
        key = {"kind": "finetune", "table": table, "target": target, "ratio": ratio, "seed": seed, "arm": arm}
        if records.has(key):
            continue
        t0 = time.perf_counter()
        result = finetune_and_score(spec, task, start, opts, tokenizer.pad_token_id or 0)
        records.add({**key, "shots": len(task.train), **result["test"], "steps": result["finetune"]["steps"],
                     "seconds": time.perf_counter() - t0})


def run_metaft(args, records, tokenizer, seeds, cache):
    domains = args.domains.split(",")
    ratios = [float(r) for r in args.ratios_amazon.split(",")]
    algorithms = ("metaft",) + (("reptile", "fomaml") if args.baselines else ()) + (("multi",) if args.ablation else ())
    arms = {}
    for target in domains:  # every start first, then seed by seed: a cut-short run holds whole seeds
        sources = [d for d in AMAZON if d != target]
        arms[target] = {"no": None, **{a: meta_start(args, records, a, target, sources, args.seq_amazon, tokenizer, cache)
                                       for a in algorithms}}
    for seed in seeds:
        for target in domains:
            for ratio in ratios:
                finetune_arms(args, records, "11", target, ratio, AMAZON_TRAIN, seed, arms[target], args.seq_amazon, tokenizer)


def run_metadtl(args, records, tokenizer, seeds, cache):
    ratios = [float(r) for r in args.ratios_glue.split(",")]
    target, sources = args.glue_target, [t for t in GLUE if t != args.glue_target]
    starts = {a: meta_start(args, records, a, target, sources, args.seq_glue, tokenizer, cache)
              for a in ("metaft", "metadtl")}
    for seed in seeds:
        for ratio in ratios:
            finetune_arms(args, records, "12", target, ratio, GLUE_TRAIN[target], seed, {"single": None, **starts},
                          args.seq_glue, tokenizer)


def _mean(values):
    return statistics.fmean(values) if values else None


def _cell(rows, **key) -> tuple[float | None, float | None]:
    """Mean and (population) standard deviation over seeds of the accuracy x100."""
    accs = [100 * r["accuracy"] for r in rows if r["kind"] == "finetune" and all(r[k] == v for k, v in key.items())]
    return (statistics.fmean(accs), statistics.pstdev(accs)) if accs else (None, None)


def _fmt(value, sd=None) -> str:
    return "-" if value is None else f"{value:.1f}" + ("" if sd is None else f" ± {sd:.1f}")


def report(records: Records) -> str:
    rows = records.rows
    lines = []
    t11 = [r for r in rows if r.get("table") == "11"]
    if t11:
        ratios = sorted({r["ratio"] for r in t11})
        domains = [d for d in AMAZON if any(r["target"] == d for r in t11)]
        arms = [a for a in ("no", "metaft", "reptile", "fomaml", "multi") if any(r["arm"] == a for r in t11)]
        names = {"no": "No", "metaft": "Yes" if len(arms) == 2 else "MetaFT", "reptile": "Reptile", "fomaml": "FOMAML",
                 "multi": "Multi"}
        lines += ["Table 11 (MetaFT, Amazon, accuracy %, mean ± sd over seeds; Average: mean of the domain means):", "",
                  "| Domain | " + " | ".join(f"{round(100 * q)}% {names[a]}" for q in ratios for a in arms) + " |",
                  "|---|" + "---:|" * (len(arms) * len(ratios))]
        for d in domains + ["Average"]:
            cells = []
            for q in ratios:
                for arm in arms:
                    if d == "Average":
                        vals = [_cell(t11, target=x, ratio=q, arm=arm)[0] for x in domains]
                        cells.append(_fmt(_mean([v for v in vals if v is not None])))
                    else:
                        cells.append(_fmt(*_cell(t11, target=d, ratio=q, arm=arm)))
            lines.append(f"| {d} | " + " | ".join(cells) + " |")
        seeds = sorted({r['seed'] for r in t11})
        lines += ["", f"seeds: {seeds}; runs: {len(t11)}", ""]
    task_names = {"mrpc": "MRPC", "sst2": "SST-2", "cola": "CoLA", "rte": "RTE"}
    for target in [t for t in GLUE if any(r.get("table") == "12" and r["target"] == t for r in rows)]:
        t12 = [r for r in rows if r.get("table") == "12" and r["target"] == target]
        helpers = ", ".join(task_names[t] for t in GLUE if t != target)
        lines += [f"Table 12 ({task_names[target]} helped by {helpers}, accuracy %, mean ± sd over seeds):", "",
                  "| Percentage (rows) | Single-task | MetaFT | MetaDTL |", "|---|---:|---:|---:|"]
        for q in sorted({r["ratio"] for r in t12}):
            (single, s_sd), (mft, m_sd), (dtl, d_sd) = (_cell(t12, ratio=q, arm=a) for a in ("single", "metaft", "metadtl"))
            gain = f" ({dtl - single:+.1f})" if None not in (dtl, single) else ""
            shots = next(r["shots"] for r in t12 if r["ratio"] == q)
            lines.append(f"| {100 * q:g}% ({shots}) | {_fmt(single, s_sd)} | {_fmt(mft, m_sd)} | {_fmt(dtl, d_sd)}{gain} |")
        lines += ["", f"seeds: {sorted({r['seed'] for r in t12})}; runs: {len(t12)}", ""]
    metas = [r for r in rows if r["kind"] == "meta"]
    fts = [r["seconds"] for r in rows if r["kind"] == "finetune"]
    if metas:
        lines.append(f"meta-training: {len(metas)} runs, median {statistics.median(r['seconds'] for r in metas):.0f} s; "
                     f"fine-tuning + test: {len(fts)} runs, median {statistics.median(fts):.0f} s, "
                     f"total {sum(fts) + sum(r['seconds'] for r in metas):.0f} s")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.quick:
        args.out = args.out if args.out != "runs/bench_meta" else tempfile.mkdtemp(prefix="bench_meta_quick_")
        args.seeds, args.domains, args.meta_steps = "0", "books", 2
        args.ratios_amazon, args.ratios_glue = "0.05", "0.01"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = Records(out / "records.jsonl")
    if not args.report:
        from adapterkit.backbone import load_tokenizer

        tokenizer, seeds, cache = load_tokenizer(args.model), [int(s) for s in args.seeds.split(",")], {}
        if args.part in ("metaft", "all"):
            run_metaft(args, records, tokenizer, seeds, cache)
        if args.part in ("metadtl", "all"):
            run_metadtl(args, records, tokenizer, seeds, cache)
    print(report(records))


if __name__ == "__main__":
    main()
