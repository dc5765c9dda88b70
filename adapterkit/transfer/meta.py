"""Meta-learning over adapter weights: `metaft`, `metadtl`, `reptile`, `fomaml`.

Each algorithm learns, from the source domains or tasks (`spec.source`), a starting point for
an adapter over the frozen backbone, saves it (`<output>/meta_adapter`, loadable with
`adapterkit train --init-adapter DIR` or pushed to the hub), then fine-tunes it on the target's
`target_shots` labelled rows and scores the target's test split (`<output>/adapter`).

- metaft: MetaFT (Wang et al., EMNLP 2020), typicality-weighted multi-domain training with
  domain corruption; domains share the label set, the start includes the head.
- metadtl: Meta-DTL (Wang et al., EMNLP 2021), tasks with different label sets, one head per
  task, transferability-weighted, task-level maximum entropy; the start is the adapter only
  (the target's head is new).
- reptile / fomaml: first-order baselines over the adapter and head with
  `torch.func.functional_call` (no copy of the backbone); the start includes the head.
Details and the choices the papers leave open: meta_learners.py, first_order.py, typicality.py.
Settings go in `spec.options` (`-o KEY=VALUE`): the fields of `MetaOptions`.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from adapterkit import backbone
from adapterkit.errors import AdapterkitError
from adapterkit.io import load_adapter, save_adapter
from adapterkit.model import add_adapter, adapter_parameters, head_parameters, train_adapter
from adapterkit.transfer.common import steps_for
from adapterkit.toolkit.batching import batches, cycle, model_inputs
from adapterkit.toolkit.schedule import fit
from adapterkit.toolkit.scoring import score
from adapterkit.transfer.meta_tasks import MetaTask, load_meta_tasks
from adapterkit.transfer.registry import TransferSpec, register_algorithm

ADAPTER = "meta"
META_DIR, ADAPTER_DIR = "meta_adapter", "adapter"
QUICK_META_STEPS = 2


@dataclass
class MetaOptions:
    """Settings of the meta-learning algorithms (each uses the ones named in its docstring)."""

    meta_steps: int = 200  # outer steps (all)
    meta_lr: float = 1e-3  # AdamW lr: metaft, metadtl, fomaml's outer step
    per_group: int | None = None  # rows per domain/task per step (metaft, metadtl); default batch_size // groups
    max_source_rows: int | None = 2000  # source training rows kept per domain/task
    alpha: float = 0.5  # typicality: weight of the own-domain prototype vs the others
    weighting: str = "typicality"  # metaft/metadtl row weights: typicality, or uniform (an ablation: every row 1)
    confusion_weight: float = 0.1  # domain corruption (metaft) / task max-entropy (metadtl)
    inner_steps: int = 4  # SGD steps per task in the inner loop (reptile, fomaml)
    inner_lr: float = 1e-2  # inner-loop SGD learning rate (reptile, fomaml)
    step_size: float = 0.5  # Reptile's outer step eps, annealed linearly to 0
    tasks_per_step: int = 1  # tasks per outer step (reptile, fomaml)
    finetune_steps: int | None = None  # target fine-tuning steps; default epochs over the target rows
    save_meta: bool = True  # write <output>/meta_adapter

    def __post_init__(self) -> None:
        for name in ("meta_steps", "inner_steps", "tasks_per_step"):
            if getattr(self, name) < 1:
                raise AdapterkitError(f"option {name} must be >= 1, got {getattr(self, name)}")
        for name in ("per_group", "max_source_rows", "finetune_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise AdapterkitError(f"option {name} must be >= 1, got {getattr(self, name)}")
        for name in ("meta_lr", "inner_lr", "step_size"):
            if not getattr(self, name) > 0:
                raise AdapterkitError(f"option {name} must be > 0, got {getattr(self, name)}")
        if self.weighting not in ("typicality", "uniform"):
            raise AdapterkitError(f"option weighting must be 'typicality' or 'uniform', got {self.weighting!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise AdapterkitError(f"option alpha must be in [0, 1], got {self.alpha}")
        if self.confusion_weight < 0:
            raise AdapterkitError(f"option confusion_weight must be >= 0, got {self.confusion_weight}")

    @classmethod
    def from_options(cls, options: dict) -> "MetaOptions":
        from adapterkit.transfer.registry import resolve_options

        defaults = {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}
        return cls(**resolve_options(options, defaults, "meta-learning"))


def new_model(spec: TransferSpec, num_labels: int, start: str | None = None):
    """The backbone with adapter `meta`: loaded from `start` (a saved adapter) or fresh; trainable."""
    torch.manual_seed(spec.seed)
    model = backbone.load_model(spec.model, num_labels=num_labels)
    if start is not None:
        load_adapter(model, start, name=ADAPTER)
    else:
        add_adapter(model, ADAPTER, spec.adapter_config())
    train_adapter(model, ADAPTER)
    return model


def meta_learn(algorithm: str, model, sources: list[MetaTask], spec: TransferSpec, opts: MetaOptions,
               pad_id: int, embeddings: list[torch.Tensor] | None = None) -> tuple[dict, bool]:
    """Meta-train adapter `meta` of `model` in place; returns (info, whether the head is part of the start).
    `embeddings`: the sources' frozen-backbone embeddings, when already computed (metaft, metadtl)."""
    from adapterkit.transfer import meta_learners as ml

    if not sources:
        raise AdapterkitError(f"{algorithm} needs source domains or tasks (--source)")
    steps = min(opts.meta_steps, QUICK_META_STEPS) if spec.quick else opts.meta_steps
    if algorithm in ("reptile", "fomaml"):
        return _first_order(algorithm, model, sources, spec, opts, steps, pad_id), True
    same_labels = algorithm == "metaft"
    if same_labels:
        _same_label_count(algorithm, model, sources)
    weights, info = group_weights(model, sources, pad_id, opts.alpha, same_labels, embeddings, opts.weighting)
    heads = None if same_labels else ml.group_heads(model, [s.num_labels for s in sources], spec.seed)
    trainable = list(adapter_parameters(model, ADAPTER).values())
    if same_labels:
        trainable += list(head_parameters(model).values())
    per_group = opts.per_group or max(2, spec.batch_size // len(sources))
    info["history"] = ml.meta_fit(
        model, trainable, [s.train for s in sources], weights, heads=heads,
        confusion="corrupt" if same_labels else "entropy", confusion_weight=opts.confusion_weight,
        steps=steps, per_group=per_group, lr=opts.meta_lr, pad_id=pad_id, seed=spec.seed)
    info.update(steps=steps, per_group=per_group)
    return info, same_labels


def group_weights(model, sources: list[MetaTask], pad_id: int, alpha: float, same_labels: bool,
                  embeddings: list[torch.Tensor] | None = None,
                  weighting: str = "typicality") -> tuple[list[torch.Tensor], dict]:
    """Typicality (metaft) or transferability (metadtl) weights per source, or all ones
    (`weighting="uniform"`), and a summary. Meta-DTL's class relations are reported either way."""
    from adapterkit.toolkit.features import frozen_features
    from adapterkit.transfer.typicality import class_relations, typicality_weights

    sizes = [len(s.train) for s in sources]
    info = {}
    if weighting == "uniform" and same_labels:  # nothing needs the embeddings
        weights = torch.ones(sum(sizes))
    else:
        emb = torch.cat(embeddings or [frozen_features(model, s.train, pad_id) for s in sources])
        labels = torch.cat([torch.tensor([r["labels"] for r in s.train]) for s in sources])
        groups = torch.cat([torch.full((n,), g) for g, n in enumerate(sizes)])
        weights = (typicality_weights(emb, labels, groups, alpha, same_labels) if weighting == "typicality"
                   else torch.ones(len(labels)))
        if not same_labels:
            keys, rel = class_relations(emb, labels, groups)
            info["relations"] = {"classes": [f"{sources[g].name}:{c}" for g, c in keys], "cosine": rel.tolist()}
    parts = list(weights.split(sizes))
    info["weights"] = {s.name: {"sum": w.sum().item(), "min": w.min().item(), "max": w.max().item()}
                       for s, w in zip(sources, parts)}
    return parts, info


def _first_order(algorithm: str, model, sources: list[MetaTask], spec: TransferSpec, opts: MetaOptions,
                 steps: int, pad_id: int) -> dict:
    from adapterkit.transfer import first_order as fo

    _same_label_count(algorithm, model, sources)
    theta = {**adapter_parameters(model, ADAPTER), **head_parameters(model)}
    streams = [cycle(lambda epoch, rows=s.train, g=g: batches(rows, spec.batch_size, pad_id, seed=spec.seed + 1000 * g + 100_000 * epoch))
               for g, s in enumerate(sources)]
    rng = random.Random(spec.seed)
    optimizer = torch.optim.AdamW(theta.values(), lr=opts.meta_lr) if algorithm == "fomaml" else None
    losses: list[float] = []
    for step in range(steps):
        chosen = rng.sample(range(len(sources)), min(opts.tasks_per_step, len(sources)))
        if algorithm == "reptile":
            adapted = [fo.adapt(model, theta, [next(streams[g]) for _ in range(opts.inner_steps)], opts.inner_lr, losses)
                       for g in chosen]
            fo.reptile_update(theta, adapted, fo.reptile_step_size(opts.step_size, step, steps))
        else:
            tasks = [([next(streams[g]) for _ in range(opts.inner_steps)], next(streams[g])) for g in chosen]
            grads = fo.fomaml_gradient(model, theta, tasks, opts.inner_lr, losses)
            for name, p in theta.items():
                p.grad = grads[name]
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return {"steps": steps, "losses": losses}


def finetune(model, rows: list[dict], spec: TransferSpec, opts: MetaOptions, pad_id: int) -> dict:
    """Fine-tune adapter `meta` and the head on the target rows (AdamW, spec.lr, linear schedule)."""
    train_adapter(model, ADAPTER)
    steps = opts.finetune_steps or steps_for(len(rows), spec)
    if spec.quick:
        steps = min(steps, 4)
    stream = cycle(lambda epoch: batches(rows, spec.batch_size, pad_id, seed=spec.seed + 100_000 * epoch))
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_fn(step: int) -> torch.Tensor:
        batch = next(stream)
        return model(**model_inputs(batch), labels=batch["labels"]).loss

    losses = fit(params, steps, loss_fn, spec.lr)
    return {"steps": steps, "rows": len(rows), "first_loss": losses[0], "last_loss": losses[-1]}


def finetune_and_score(spec: TransferSpec, target: MetaTask, start: str | None = None,
                       opts: MetaOptions | None = None, pad_id: int = 0) -> dict:
    """A fresh model started from `start` (a saved meta adapter) or from scratch, fine-tuned on
    the target's train rows; its test metrics and the fine-tuning summary."""
    opts = opts or MetaOptions()
    model = new_model(spec, target.num_labels, start)
    info = finetune(model, target.train, spec, opts, pad_id)
    return {"test": score(model, target.test, pad_id), "finetune": info}


def run_meta(algorithm: str, spec: TransferSpec) -> dict:
    opts = MetaOptions.from_options(spec.options)
    tokenizer = backbone.load_tokenizer(spec.model)
    pad_id = tokenizer.pad_token_id or 0
    tasks = load_meta_tasks(spec, tokenizer, opts.max_source_rows)
    sources, target = [tasks[n] for n in spec.source], tasks[spec.target]
    model = new_model(spec, target.num_labels)
    info, include_head = meta_learn(algorithm, model, sources, spec, opts, pad_id)
    out = Path(spec.output) if spec.output else None
    if out is not None and opts.save_meta:
        save_adapter(model, ADAPTER, out / META_DIR, include_head=include_head)
    tuned = finetune(model, target.train, spec, opts, pad_id)
    result = {"test": score(model, target.test, pad_id), "meta": info, "finetune": tuned,
              "start_includes_head": include_head}
    if out is not None:
        save_adapter(model, ADAPTER, out / ADAPTER_DIR)
        result["meta_adapter"] = str(out / META_DIR) if opts.save_meta else None
    return result


def _same_label_count(algorithm: str, model, sources: list[MetaTask]) -> None:
    counts = {s.name: s.num_labels for s in sources}
    if set(counts.values()) != {model.config.num_labels}:
        raise AdapterkitError(f"{algorithm} shares one head: every source and the target need "
                              f"{model.config.num_labels} classes, got {counts}; use metadtl for different label sets")


@register_algorithm("metaft")
def metaft(spec: TransferSpec) -> dict:
    """MetaFT: typicality-weighted meta-learner across domains with domain corruption, then fine-tuning."""
    return run_meta("metaft", spec)


@register_algorithm("metadtl")
def metadtl(spec: TransferSpec) -> dict:
    """Meta-DTL: cross-task meta-learner (per-task heads, transferability weights, max-entropy), then fine-tuning."""
    return run_meta("metadtl", spec)


@register_algorithm("reptile")
def reptile(spec: TransferSpec) -> dict:
    """Reptile over the adapter and head (functional_call inner loop), then fine-tuning."""
    return run_meta("reptile", spec)


@register_algorithm("fomaml")
def fomaml(spec: TransferSpec) -> dict:
    """First-order MAML over the adapter and head (functional_call inner loop), then fine-tuning."""
    return run_meta("fomaml", spec)
