"""Distillation losses, one registered function per method, each returning a loss per example (B,).

- vanilla (Hinton et al. 2015, https://arxiv.org/abs/1503.02531): KL between the temperature-
  softened teacher and student distributions (times T^2) mixed with the hard-label
  cross-entropy: alpha * soft + (1 - alpha) * hard.
- pkd (BERT-PKD, Sun et al. 2019, https://arxiv.org/abs/1908.09355): vanilla plus beta times the
  squared distance between the L2-normalised [CLS] vectors of student layers 1..N_s-1 and the
  teacher layers they are mapped to ("skip": layer j -> j*N_t/N_s; "last": the top N_s-1).
- tinybert (Jiao et al. 2020, https://arxiv.org/abs/1909.10351), task-distillation losses in one
  stage: MSE of the embedding outputs, MSE of every student layer's hidden states against the
  mapped teacher layer, MSE of their attention maps, plus the soft cross-entropy of the logits.
  Two choices differ from the paper: attention maps are the softmax probabilities (Hugging Face
  returns those, TinyBERT used the pre-softmax scores), and the two stages (intermediate layers,
  then predictions) are one summed loss. With different head counts the head-averaged maps are
  compared.
When the student is narrower, hidden states go through a learned projection student -> teacher
width (TinyBERT's W_h; W_e for the embeddings), created by the training loop and trained with the
student. Padding tokens never count: token losses are means over real tokens.

Add a method with `@register_kd_method(name, needs=("hidden", "attentions"))`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from adapterkit.errors import AdapterkitError
import torch.nn.functional as F
from torch import nn

from adapterkit.errors import AdapterkitError

LossFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class KDMethod:
    name: str
    loss: LossFn  # (student_out, teacher_out, batch, ctx) -> (B,)
    needs: tuple[str, ...] = ()  # model outputs beyond logits: "hidden", "attentions"


KD_METHODS: dict[str, KDMethod] = {}


def register_kd_method(name: str, needs: tuple[str, ...] = ()) -> Callable[[LossFn], LossFn]:
    def decorate(fn: LossFn) -> LossFn:
        if name in KD_METHODS:
            raise ValueError(f"distillation method {name!r} is already registered")
        KD_METHODS[name] = KDMethod(name, fn, tuple(needs))
        return fn

    return decorate


@dataclass
class KDContext:
    """What a loss needs besides the two models' outputs."""

    temperature: float = 2.0
    alpha: float = 0.5
    beta: float = 100.0
    domain_weight: float = 0.5  # MetaKD: weight of the domain-knowledge term
    layer_map: list[int] = field(default_factory=list)  # teacher layer (1-based) per student layer 1..N_s
    proj_hidden: nn.Module = field(default_factory=nn.Identity)
    proj_embed: nn.Module = field(default_factory=nn.Identity)
    rows: dict[str, torch.Tensor] = field(default_factory=dict)  # per-row extras (e.g. MetaKD weights)
    modules: dict[str, nn.Module] = field(default_factory=dict)  # method-specific modules


def layer_map(kind: str | list[int], n_student: int, n_teacher: int) -> list[int]:
    """Teacher layer (1-based) for each student layer 1..n_student."""
    if isinstance(kind, (list, tuple)):
        if len(kind) != n_student or not all(1 <= k <= n_teacher for k in kind):
            raise AdapterkitError(f"layer_map {kind} must give {n_student} teacher layers in 1..{n_teacher}")
        return list(kind)
    if kind in ("skip", "uniform"):
        return [j * n_teacher // n_student for j in range(1, n_student + 1)]
    if kind == "last":
        return [n_teacher - n_student + j for j in range(1, n_student + 1)]
    if kind == "bottom":
        return list(range(1, n_student + 1))
    raise AdapterkitError(f"layer_map must be 'skip', 'last', 'bottom' or a list of layers, got {kind!r}")


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher_T || student_T) * T^2 per example."""
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return (t.exp() * (t - s)).sum(-1) * temperature ** 2


def token_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over real tokens, per example; student/teacher (B, T, H), mask (B, T)."""
    m = mask.to(student.dtype).unsqueeze(-1)  # (B, T, 1)
    err = ((student - teacher) ** 2 * m).sum(dim=(1, 2))
    return err / (m.sum(dim=(1, 2)) * student.shape[-1]).clamp_min(1)


def attention_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE of attention maps (B, heads, T, T) over real query/key pairs, per example."""
    if student.shape[1] != teacher.shape[1]:
        student, teacher = student.mean(1, keepdim=True), teacher.mean(1, keepdim=True)
    m = mask.to(student.dtype)
    pair = (m[:, None, :, None] * m[:, None, None, :]).expand_as(student)  # (B, h, T, T)
    err = ((student - teacher) ** 2 * pair).sum(dim=(1, 2, 3))
    return err / pair.sum(dim=(1, 2, 3)).clamp_min(1)


def hard_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels, reduction="none")


@register_kd_method("vanilla")
def vanilla_loss(s, t, batch, ctx: KDContext) -> torch.Tensor:
    soft = soft_kl(s.logits, t.logits, ctx.temperature)
    if ctx.alpha >= 1.0:
        return soft
    return ctx.alpha * soft + (1 - ctx.alpha) * hard_ce(s.logits, batch["labels"])


@register_kd_method("pkd", needs=("hidden",))
def pkd_loss(s, t, batch, ctx: KDContext) -> torch.Tensor:
    loss = vanilla_loss(s, t, batch, ctx)
    for j, k in enumerate(ctx.layer_map[:-1], start=1):  # the top layer is covered by the logits
        s_cls = F.normalize(ctx.proj_hidden(s.hidden_states[j][:, 0]).float(), dim=-1)
        t_cls = F.normalize(t.hidden_states[k][:, 0].float(), dim=-1)
        loss = loss + ctx.beta * ((s_cls - t_cls) ** 2).sum(-1)
    return loss


def tinybert_intermediate(s, t, batch, ctx: KDContext) -> torch.Tensor:
    """Embedding + hidden-state + attention MSE terms, per example."""
    mask = batch["attention_mask"]
    loss = token_mse(ctx.proj_embed(s.hidden_states[0]), t.hidden_states[0], mask)
    for j, k in enumerate(ctx.layer_map, start=1):
        loss = loss + token_mse(ctx.proj_hidden(s.hidden_states[j]), t.hidden_states[k], mask)
        loss = loss + attention_mse(s.attentions[j - 1], t.attentions[k - 1], mask)
    return loss


@register_kd_method("tinybert", needs=("hidden", "attentions"))
def tinybert_loss(s, t, batch, ctx: KDContext) -> torch.Tensor:
    return tinybert_intermediate(s, t, batch, ctx) + soft_kl(s.logits, t.logits, ctx.temperature)


@register_kd_method("metakd", needs=("hidden", "attentions"))
def metakd_loss(s, t, batch, ctx: KDContext) -> torch.Tensor:
    """MetaKD (adapterkit.transfer.metakd): row-weighted intermediate + domain-content terms, soft KL."""
    rows, mask = batch["_rows"], batch["attention_mask"]
    weights, domains = ctx.rows["weights"][rows], ctx.rows["domains"][rows]
    with torch.no_grad():
        _, t_content = ctx.modules["teacher_head"](t.hidden_states[-1], mask, domains)
    _, s_content = ctx.modules["student_head"](s.hidden_states[-1], mask, domains)
    domain_term = ((ctx.proj_hidden(s_content) - t_content) ** 2).mean(-1)
    intermediate = tinybert_intermediate(s, t, batch, ctx) + ctx.domain_weight * domain_term
    return weights * intermediate + soft_kl(s.logits, t.logits, ctx.temperature)
