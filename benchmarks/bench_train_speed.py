"""Training-step and inference speed: adapterkit vs AdapterHub `adapters` vs PEFT LoRA vs full
fine-tuning, on the same backbone in one process, steps interleaved, medians and ratios.

    .venv-tf4/bin/python benchmarks/bench_train_speed.py            # with AdapterHub (transformers 4.57)
    python3 benchmarks/bench_train_speed.py                          # without it (transformers 5)

Variants (all-MiniLM-L6-v2 by default, sequence classification, AdamW):
  full            every weight trained, dropout as configured (the baseline)
  adapterkit      Houlsby placement on every layer, one adapter per site (sharing none),
                  bottleneck = hidden/16, swish: the same size as AdapterHub's Houlsby config;
                  adapterkit's default: dropout inside the frozen backbone off
  adapterkit+drop the same with the backbone's dropout kept (--backbone-dropout)
  adapterhub      `adapters` with config "double_seq_bn" (Houlsby)
  lora            PEFT LoRA r=8 on query/value
  head            only the classifier head (and pooler) trained
Memory is counted exactly rather than sampled: bytes of tensors saved for backward (activation
memory) plus trainable parameters' gradients and AdamW state.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def build(kind: str, model_name: str | None):
    from adapterkit.backbone import load_model

    model = load_model(model_name, num_labels=2)
    model.train()
    if kind.startswith("adapterkit"):
        import adapterkit as ak

        ak.add_adapter(model, "a", ak.BottleneckConfig(reduction_factor=16, sharing="none", activation="swish"))
        ak.train_adapter(model, "a", backbone_dropout=kind.endswith("+drop"))
    elif kind == "adapterhub":
        import adapters

        adapters.init(model)
        model.add_adapter("a", config="double_seq_bn")
        model.train_adapter("a")
    elif kind == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], task_type="SEQ_CLS"))
        model.train()
    elif kind == "head":
        for name, p in model.named_parameters():
            p.requires_grad_("classifier" in name or "pooler" in name)
    elif kind == "bare":
        model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4) if params else None
    return model, optimizer


def train_step(model, optimizer, batch) -> None:
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def saved_bytes(model, batch) -> int:
    """Bytes autograd keeps for backward in one forward pass (distinct storages)."""
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


def state_bytes(model) -> int:
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return 3 * trainable  # gradient + AdamW exp_avg + exp_avg_sq


def interleave(fns: dict, repeats: int, warmup: int) -> dict[str, float]:
    times = {k: [] for k in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="backbone (default: bundled all-MiniLM-L6-v2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=15, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--variants", default="full,adapterkit,adapterkit+drop,adapterhub,lora,head")
    args = parser.parse_args()

    import transformers

    kinds = args.variants.split(",")
    try:
        import adapters  # noqa: F401
    except ImportError:
        kinds = [k for k in kinds if k != "adapterhub"]
        print("note: `adapters` not installed here, AdapterHub left out (run with .venv-tf4/bin/python)")
    torch.manual_seed(0)
    batch = {
        "input_ids": torch.randint(1000, 20000, (args.batch_size, args.seq_len)),
        "attention_mask": torch.ones(args.batch_size, args.seq_len, dtype=torch.long),
        "labels": torch.randint(0, 2, (args.batch_size,)),
    }
    models = {k: build(k, args.model) for k in kinds}
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch_size} x {args.seq_len}, {args.steps} interleaved steps per variant (after {args.warmup} warm-up)")

    steps = interleave({k: (lambda m=m, o=o: train_step(m, o, batch)) for k, (m, o) in models.items()},
                       args.steps, args.warmup)
    infer_models = {"bare": build("bare", args.model)[0], **{k: m for k, (m, _) in models.items() if k not in ("full", "head", "adapterkit+drop")}}
    for m in infer_models.values():
        m.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def infer(m):
        with torch.inference_mode():
            m(**inputs)

    latency = interleave({k: (lambda m=m: infer(m)) for k, m in infer_models.items()}, args.steps * 2, args.warmup)

    print("\n| variant | trainable params | step (ms, median) | step vs full | activation + state memory (MB) |")
    print("|---|---:|---:|---:|---:|")
    for k, (m, _) in models.items():
        n = sum(p.numel() for p in m.parameters() if p.requires_grad)
        mem = (saved_bytes(m, batch) + state_bytes(m)) / 2**20
        print(f"| {k} | {n:,} | {steps[k] * 1e3:.0f} | {steps[k] / steps['full']:.3f}x | {mem:.0f} |")
    print("\n| model | inference (ms, median) | vs bare backbone |")
    print("|---|---:|---:|")
    for k in infer_models:
        print(f"| {k} | {latency[k] * 1e3:.1f} | {latency[k] / latency['bare']:.3f}x |")


if __name__ == "__main__":
    main()
