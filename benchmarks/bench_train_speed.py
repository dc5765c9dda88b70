"""Training-step and inference speed: adapterkit vs AdapterHub `adapters` vs PEFT LoRA vs full
fine-tuning, on the same backbone in one process, steps interleaved, medians and ratios, under
each precision asked for (`--precisions fp32,bf16`: every variant runs its forward and loss under
the same `torch.autocast`, see adapterkit.precision; ratios are against full fine-tuning fp32).

    .venv-tf4/bin/python benchmarks/bench_train_speed.py            # with AdapterHub (transformers 4.57)
    python3 benchmarks/bench_train_speed.py                          # without it (transformers 5)
    python3 benchmarks/bench_train_speed.py --precisions fp32,bf16 \
        --variants full,adapterkit,adapterkit-layer,adapterkit-3shared,adapterkit+bb16,adapterhub,lora,head

Variants (all-MiniLM-L6-v2 by default, sequence classification, AdamW):
  full            every weight trained, dropout as configured (the baseline)
  adapterkit      Houlsby placement on every layer, one adapter per site (sharing none),
                  bottleneck = hidden/16, swish: the same size as AdapterHub's Houlsby config;
                  adapterkit's default: dropout inside the frozen backbone off
  adapterkit+drop the same with the backbone's dropout kept (--backbone-dropout)
  adapterkit-layer  one adapter per layer (sharing 1), otherwise the same
  adapterkit-3shared  one adapter per 3 consecutive layers (sharing 3)
  adapterkit+bb16 per site, frozen backbone weights stored in bf16 (--backbone-dtype bf16; bf16 only)
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


ADAPTERKIT_SHARING = {"adapterkit": "none", "adapterkit+drop": "none", "adapterkit+bb16": "none",
                      "adapterkit-layer": 1, "adapterkit-3shared": 3}


def build(kind: str, model_name: str | None, precision: str = "fp32"):
    from adapterkit.backbone import load_model
    from adapterkit.precision import Precision

    model = load_model(model_name, num_labels=2)
    model.train()
    if kind.startswith("adapterkit"):
        import adapterkit as ak

        config = ak.BottleneckConfig(reduction_factor=16, sharing=ADAPTERKIT_SHARING[kind], activation="swish")
        ak.add_adapter(model, "a", config)
        ak.train_adapter(model, "a", backbone_dropout=kind.endswith("+drop"))
        Precision(precision, backbone_dtype="bf16" if kind.endswith("+bb16") else "fp32").prepare(model)
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


def train_step(model, optimizer, batch, autocast) -> None:
    with autocast():
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def saved_bytes(model, batch, autocast) -> int:
    """Bytes autograd keeps for backward in one forward pass (distinct storages)."""
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast():
        loss = model(**batch).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


def state_bytes(model) -> int:
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return 3 * trainable  # gradient + AdamW exp_avg + exp_avg_sq


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


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
    parser.add_argument("--precisions", default="fp32", help="comma-separated: fp32, bf16, fp16")
    args = parser.parse_args()

    import transformers

    from adapterkit.precision import Precision, native_support

    kinds = args.variants.split(",")
    try:
        import adapters  # noqa: F401
    except ImportError:
        kinds = [k for k in kinds if k != "adapterhub"]
        print("note: `adapters` not installed here, AdapterHub left out (run with .venv-tf4/bin/python)")
    precisions = args.precisions.split(",")
    for name in precisions:
        ok, why = native_support(name, "cpu")
        if not ok:
            print(f"note: {name} is not native here ({why}); timed anyway")
    torch.manual_seed(0)
    batch = {
        "input_ids": torch.randint(1000, 20000, (args.batch_size, args.seq_len)),
        "attention_mask": torch.ones(args.batch_size, args.seq_len, dtype=torch.long),
        "labels": torch.randint(0, 2, (args.batch_size,)),
    }
    runs = [(k, p) for p in precisions for k in kinds if not (k.endswith("+bb16") and p != "bf16")]
    models = {(k, p): build(k, args.model, p) for k, p in runs}
    autocast = {p: Precision(p).autocast for p in precisions}
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch_size} x {args.seq_len}, {args.steps} interleaved steps per variant (after {args.warmup} warm-up)")

    steps = interleave({(k, p): (lambda m=m, o=o, p=p: train_step(m, o, batch, autocast[p]))
                        for (k, p), (m, o) in models.items()}, args.steps, args.warmup)
    bare = {p: build("bare", args.model)[0] for p in precisions}
    infer_models = {("bare", p): bare[p] for p in precisions}
    infer_models |= {(k, p): m for (k, p), (m, _) in models.items() if k in ("adapterkit", "adapterhub", "lora")}
    for m in infer_models.values():
        m.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def infer(m, p):
        with torch.inference_mode(), autocast[p]():
            m(**inputs)

    latency = interleave({(k, p): (lambda m=m, p=p: infer(m, p)) for (k, p), m in infer_models.items()},
                         args.steps * 2, args.warmup)

    base = steps.get(("full", "fp32")) or steps[runs[0]]
    print(f"\n| variant | precision | trainable params | step (ms, median) | step vs full fp32 | vs full, same precision "
          f"| activation + state memory (MB) | weights (MB) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (k, p), (m, _) in models.items():
        n = sum(q.numel() for q in m.parameters() if q.requires_grad)
        mem = (saved_bytes(m, batch, autocast[p]) + state_bytes(m)) / 2**20
        same = steps.get(("full", p))
        print(f"| {k} | {p} | {n:,} | {steps[k, p] * 1e3:.0f} | {steps[k, p] / base:.3f}x | "
              f"{f'{steps[k, p] / same:.3f}x' if same else '-'} | {mem:.0f} | {weight_bytes(m) / 2**20:.0f} |")
    print("\n| model | precision | inference (ms, median) | vs bare backbone, same precision |")
    print("|---|---|---:|---:|")
    for k, p in infer_models:
        print(f"| {k} | {p} | {latency[k, p] * 1e3:.1f} | {latency[k, p] / latency['bare', p]:.3f}x |")


if __name__ == "__main__":
    main()
