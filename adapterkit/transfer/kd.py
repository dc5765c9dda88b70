"""Training loops for distillation: `distill(teacher, student, rows, KDConfig(...))` and the plain
supervised `train_supervised` used for teachers.

Rows are encoded examples (dicts with input_ids, attention_mask, [token_type_ids], labels), as
`adapterkit.transfer.common.load_domains` and `adapterkit.data.encode` produce them. The teacher
is frozen and runs in eval mode (no dropout), so for methods that only need its logits
(vanilla) they are computed once and reused every epoch.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Callable, Iterable

import torch
from torch import nn

from adapterkit.config import Schedule, check_number, check_settings
from adapterkit.errors import AdapterkitError
from adapterkit.precision import check_names as check_precision
from adapterkit.toolkit.batching import batches, cycle, model_inputs
from adapterkit.toolkit.schedule import fit
from adapterkit.toolkit.scoring import predict_logits
from adapterkit.transfer.kd_losses import KD_METHODS, KDContext, layer_map
from adapterkit.transfer.student import depth

TRAINABLE = ("all", "adapter")


@dataclass
class KDConfig(Schedule):
    """How a student is distilled. `train`: "all" student parameters, or "adapter" (its adapters
    and head only). `layer_map`: "skip", "last", "bottom" or explicit teacher layers (1-based)."""

    method: str = "vanilla"
    temperature: float = 2.0
    alpha: float = 0.5
    beta: float = 100.0
    domain_weight: float = 0.5
    layer_map: str | list[int] = "skip"
    lr: float = field(default=1e-4, kw_only=True)
    train: str = "all"
    precision: str = "fp32"  # distill_run / metakd_run run under this autocast (adapterkit.precision)

    def __post_init__(self) -> None:
        if self.method not in KD_METHODS:
            raise AdapterkitError(f"unknown distillation method {self.method!r}; known: {', '.join(sorted(KD_METHODS))}")
        check_settings(self)
        check_number("beta", self.beta, minimum=0.0)
        check_precision(self.precision)
        if self.train not in TRAINABLE:
            raise AdapterkitError(f"train must be one of {TRAINABLE}, got {self.train!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def distill(teacher: nn.Module, student: nn.Module, rows: list[dict], cfg: KDConfig, pad_id: int = 0,
            row_extras: dict[str, torch.Tensor] | None = None, modules: dict[str, nn.Module] | None = None) -> dict:
    """Train `student` to imitate `teacher` on `rows`; returns {"losses": [...], "steps": n}.

    `row_extras` are per-row tensors a method reads through ctx.rows (MetaKD's weights, domains);
    `modules` are extra modules it uses (trained when they have trainable parameters).
    """
    method = KD_METHODS[cfg.method]
    needs_attn = "attentions" in method.needs
    if needs_attn:
        for model in (teacher, student):
            model.set_attn_implementation("eager")  # scaled_dot_product_attention returns no maps
    teacher.eval().requires_grad_(False)
    ctx = _context(teacher, student, cfg, row_extras or {}, modules or {})
    params = _trainable(student, cfg.train) + list(ctx.proj_hidden.parameters()) + list(ctx.proj_embed.parameters())
    params += [p for m in ctx.modules.values() for p in m.parameters() if p.requires_grad]
    cached = predict_logits(teacher, rows, pad_id, title="teacher logits") if not method.needs else None
    kwargs = {"output_hidden_states": "hidden" in method.needs, "output_attentions": needs_attn}
    stream = cycle(lambda epoch: batches(rows, cfg.batch_size, pad_id, seed=cfg.seed * 1000 + epoch))
    student.train()

    def loss_fn(step: int) -> torch.Tensor:
        batch = next(stream)
        inputs = model_inputs(batch)
        if cached is not None:
            t_out = SimpleNamespace(logits=cached[batch["_rows"]])
        else:
            with torch.no_grad():
                t_out = teacher(**inputs, **kwargs)
        s_out = student(**inputs, **kwargs)
        return method.loss(s_out, t_out, batch, ctx).mean()

    losses = fit(params, _steps(len(rows), cfg), loss_fn, cfg.lr, cfg.warmup_ratio, title=f"distill ({cfg.method})")
    student.eval()
    return {"losses": losses, "steps": len(losses), "projection": not isinstance(ctx.proj_hidden, nn.Identity)}


def _context(teacher, student, cfg: KDConfig, extras: dict, modules: dict) -> KDContext:
    ctx = KDContext(temperature=cfg.temperature, alpha=cfg.alpha, beta=cfg.beta, domain_weight=cfg.domain_weight,
                    layer_map=layer_map(cfg.layer_map, depth(student), depth(teacher)),
                    rows=extras, modules=modules)
    d_s, d_t = student.config.hidden_size, teacher.config.hidden_size
    if d_s != d_t:
        device = next(student.parameters()).device
        ctx.proj_hidden = nn.Linear(d_s, d_t).to(device)
        ctx.proj_embed = nn.Linear(d_s, d_t).to(device)
    return ctx


def _trainable(student: nn.Module, which: str) -> list[nn.Parameter]:
    from adapterkit.model import adapter_parameters, head_parameters, list_adapters

    if which == "all":
        student.requires_grad_(True)
        return [p for p in student.parameters()]
    names = list_adapters(student)
    if not names:
        raise AdapterkitError("train='adapter' needs a student with adapters (the teacher had none)")
    student.requires_grad_(False)
    params = {}
    for name in names:
        params.update(adapter_parameters(student, name))
    params.update(head_parameters(student))
    for p in params.values():
        p.requires_grad_(True)
    return list(params.values())


def _steps(n_rows: int, cfg) -> int:
    steps = math.ceil(n_rows / cfg.batch_size) * cfg.epochs
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


@dataclass
class TrainConfig(Schedule):
    """Supervised training of a (teacher) model: `mode` "full" trains every parameter, "adapter"
    only the adapter named `adapter` and the head."""

    lr: float = field(default=5e-5, kw_only=True)
    mode: str = "full"
    adapter: str | None = None

    def __post_init__(self) -> None:
        check_settings(self)
        if self.mode not in ("full", "adapter"):
            raise AdapterkitError(f"mode must be 'full' or 'adapter', got {self.mode!r}")
        if self.mode == "adapter" and not self.adapter:
            raise AdapterkitError("mode='adapter' needs the adapter's name")


def train_supervised(model: nn.Module, rows: list[dict], cfg: TrainConfig, pad_id: int = 0,
                     weights: torch.Tensor | None = None,
                     extra_loss: Callable[[object, dict], torch.Tensor] | None = None,
                     extra_params: Iterable[nn.Parameter] = ()) -> list[float]:
    """Cross-entropy training (per-row `weights` optional) plus an optional `extra_loss(out, batch)`
    computed from the model output (run with hidden states); returns the losses."""
    from adapterkit.model import train_adapter

    if cfg.mode == "adapter":
        train_adapter(model, cfg.adapter)
        params = [p for p in model.parameters() if p.requires_grad]
    else:
        model.requires_grad_(True)
        params = list(model.parameters())
    params += list(extra_params)
    stream = cycle(lambda epoch: batches(rows, cfg.batch_size, pad_id, seed=cfg.seed * 1000 + epoch))
    model.train()

    def loss_fn(step: int) -> torch.Tensor:
        batch = next(stream)
        out = model(**model_inputs(batch), output_hidden_states=extra_loss is not None)
        ce = nn.functional.cross_entropy(out.logits.float(), batch["labels"], reduction="none")
        if weights is not None:
            ce = ce * weights[batch["_rows"]]
        loss = ce.mean()
        return loss + extra_loss(out, batch) if extra_loss is not None else loss

    losses = fit(params, _steps(len(rows), cfg), loss_fn, cfg.lr, cfg.warmup_ratio, title="train teacher")
    model.eval()
    return losses
