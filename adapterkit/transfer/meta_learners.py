"""MetaFT and Meta-DTL meta-training of an adapter over several domains or tasks.

Both train one shared adapter on every group (domain or task) at once: each step takes one
batch of `per_group` rows from every group, weights each row's loss by how typical or
transferable it is (`adapterkit.transfer.typicality`), and adds a term that keeps the groups
apart in the *loss* but not in the *representation*.

MetaFT (Wang et al., EMNLP 2020, https://aclanthology.org/2020.emnlp-main.250/): domains of one
task share the label set and the head. Domain corruption: the paper trains a domain classifier
on *corrupted* (random) domain labels so the representation cannot tell the domains apart. Our
choice: a per-layer domain critic (a linear classifier on the masked-mean hidden state of every
layer, the "series" of losses) learns the true domain from detached features, and the adapter
is trained, through the critic's detached weights, to predict a domain label drawn uniformly at
random for each row (the corrupted label; in expectation the cross-entropy to the uniform
distribution, i.e. domain confusion, Tzeng et al. 2015, https://arxiv.org/abs/1510.02192).
Training the critic itself on the random labels, read literally, lets the critic reach that
loss alone by predicting uniformly, without touching the representation.

Meta-DTL (Wang et al., EMNLP 2021, https://aclanthology.org/2021.emnlp-main.768/): tasks with
different label sets, one head per task (a copy of the model's head, output layer resized),
the adapter shared. Task/class relations are the cosine similarities of (task, class)
prototypes; a row's transferability is its typicality against the *nearest* class of each
other task (`same_labels=False`), so rows that look like some class elsewhere (the
task-agnostic part) get the larger weights. The weighted maximum-entropy regulariser is, here,
the transferability-weighted entropy of the per-layer task critic's prediction, maximised by the
adapter (task-agnostic representation); "unbiased" is met by normalising weights per task to
mean 1 and drawing equal batches from every task, so no task dominates by size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from adapterkit.model import head_parameters
from adapterkit.toolkit.batching import batches, cycle, model_inputs
from adapterkit.toolkit.schedule import fit
from adapterkit.toolkit.features import masked_mean

Params = dict[str, torch.Tensor]
CONFUSIONS = ("corrupt", "entropy")


class LayerCritic(nn.Module):
    """One linear group classifier per layer: features (L, N, H) -> logits (L, N, K)."""

    def __init__(self, layers: int, hidden: int, groups: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(layers, groups, hidden))
        self.bias = nn.Parameter(torch.zeros(layers, groups))

    def forward(self, feats: torch.Tensor, detach_weights: bool = False) -> torch.Tensor:
        w, b = (self.weight.detach(), self.bias.detach()) if detach_weights else (self.weight, self.bias)
        return torch.einsum("lnh,lkh->lnk", feats, w) + b[:, None, :]


@dataclass
class GroupBatch:
    """What one group contributes to a step."""

    logits: torch.Tensor  # (B, C_g)
    feats: torch.Tensor  # (L, B, H) masked-mean hidden state of every layer
    labels: torch.Tensor  # (B,)
    weights: torch.Tensor  # (B,)


def forward_group(model, batch: dict, weights: torch.Tensor, head: Params | None = None) -> GroupBatch:
    """The model on one group's batch, with `head` substituted for the model's head when given."""
    kwargs = {**model_inputs(batch), "output_hidden_states": True}
    out = functional_call(model, head or {}, args=(), kwargs=kwargs, strict=False)
    mask = batch["attention_mask"]
    feats = torch.stack([masked_mean(h, mask) for h in out.hidden_states[1:]])  # (L, B, H)
    return GroupBatch(out.logits.float(), feats.float(), batch["labels"], weights[batch["_rows"]])


def confusion_loss(critic: LayerCritic, parts: list[GroupBatch], mode: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(critic loss on detached features with true groups, weighted confusion loss for the adapter)."""
    feats = torch.cat([p.feats for p in parts], dim=1)  # (L, N, H)
    groups = torch.cat([torch.full((len(p.labels),), g) for g, p in enumerate(parts)])  # (N,)
    weights = torch.cat([p.weights for p in parts])  # (N,)
    layers, k = feats.shape[0], len(parts)
    fit_critic = F.cross_entropy(critic(feats.detach()).flatten(0, 1), groups.repeat(layers))
    logits = critic(feats, detach_weights=True)  # (L, N, K)
    if mode == "corrupt":  # cross-entropy to a random domain label per row
        corrupted = torch.randint(k, (len(groups),), generator=generator)
        per_row = F.cross_entropy(logits.permute(1, 2, 0), corrupted[:, None].expand(-1, layers), reduction="none").mean(1)
    else:  # negative entropy of the critic's prediction
        logp = logits.log_softmax(-1)
        per_row = (logp.exp() * logp).sum(-1).mean(0)  # (N,)
    return fit_critic, (weights * per_row).sum() / weights.sum()


def weighted_task_loss(parts: list[GroupBatch]) -> torch.Tensor:
    """Sum of weighted cross-entropies over all rows of the step / sum of their weights."""
    total = sum((p.weights * F.cross_entropy(p.logits, p.labels, reduction="none")).sum() for p in parts)
    return total / sum(p.weights.sum() for p in parts)


def group_heads(model, num_labels: list[int], seed: int) -> list[Params]:
    """One trainable copy of the model's head per group, the output layer resized to its classes.

    The output layer is the head parameters whose first dimension is the model's number of
    labels; it is re-initialised (normal, std 0.02; zero bias) for every group."""
    base = {n: p.detach() for n, p in head_parameters(model).items()}
    model_labels = model.config.num_labels
    if model.config.hidden_size == model_labels:
        raise ValueError("cannot tell the head's output layer apart: the hidden size equals the number of labels")
    outputs = [n for n, p in base.items() if p.shape[0] == model_labels]
    generator = torch.Generator().manual_seed(seed)
    heads = []
    for n_labels in num_labels:
        head = {}
        for name, p in base.items():
            if name in outputs:
                shape = (n_labels, *p.shape[1:])
                fresh = torch.randn(shape, generator=generator) * 0.02 if p.dim() > 1 else torch.zeros(shape)
                head[name] = fresh.to(p.dtype).requires_grad_(True)
            else:
                head[name] = p.clone().requires_grad_(True)
        heads.append(head)
    return heads


def meta_fit(model, trainable: list[torch.Tensor], groups: list[list[dict]], weights: list[torch.Tensor], *,
             heads: list[Params] | None, confusion: str, confusion_weight: float, steps: int, per_group: int,
             lr: float, pad_id: int, seed: int) -> dict:
    """Joint meta-training over all groups; returns the loss history."""
    if confusion not in CONFUSIONS:
        raise ValueError(f"confusion must be one of {CONFUSIONS}, got {confusion!r}")
    config = model.config
    critic = LayerCritic(config.num_hidden_layers, config.hidden_size, len(groups))
    streams = [cycle(lambda epoch, rows=rows, g=g: batches(rows, per_group, pad_id, seed=seed + 1000 * g + 100_000 * epoch))
               for g, rows in enumerate(groups)]
    generator = torch.Generator().manual_seed(seed)
    history = {"task": [], "confusion": [], "critic": []}
    head_tensors = [t for head in heads or [] for t in head.values()]

    def step_loss(step: int) -> torch.Tensor:
        parts = [forward_group(model, next(s), weights[g], heads[g] if heads else None) for g, s in enumerate(streams)]
        task = weighted_task_loss(parts)
        fit_critic, confuse = confusion_loss(critic, parts, confusion, generator)
        for key, value in (("task", task), ("confusion", confuse), ("critic", fit_critic)):
            history[key].append(value.item())
        return task + confusion_weight * confuse + fit_critic

    fit([*trainable, *head_tensors, *critic.parameters()], steps, step_loss, lr)
    return history
