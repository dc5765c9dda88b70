"""How representative each training row is: class prototypes in the frozen backbone's space.

MetaFT (Wang et al., EMNLP 2020, https://aclanthology.org/2020.emnlp-main.250/) learns only
from *typical* rows: a row matters when it is close to the prototype of its class in its own
domain and to the prototypes of the same class in the other domains. Meta-DTL (Wang et al.,
EMNLP 2021, https://aclanthology.org/2021.emnlp-main.768/) asks the same across tasks whose
label sets differ, where "the same class" in another task does not exist; there a row counts
as task-agnostic when it lies close to *some* class of each other task.

Both are one score here, for row i of group g (a domain or a task) with class c:

    own_i    = cos(e_i, p[g, c])
    other_i  = mean over groups g' != g of  cos(e_i, p[g', c])          (same_labels=True)
                                       or  max_c' cos(e_i, p[g', c'])   (same_labels=False)
    score_i  = alpha * own_i + (1 - alpha) * other_i                   (own_i alone with one group)

with e_i the mean-pooled last hidden state of the backbone with every adapter switched off
(adapterkit.toolkit.features.frozen_features) and
p[g, c] the mean of e over group g's rows of class c. Choices the papers leave open, made here:
negative scores are clipped to 0, and the weights are normalised *per group to mean 1*, so the
weights of group g sum to its row count n_g (a weighted loss keeps the scale of the unweighted
one, and no group dominates because it is more typical overall). A group whose scores are all 0
gets uniform weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F



def prototypes(emb: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> dict[tuple[int, int], torch.Tensor]:
    """Mean embedding of each (group, class) that has rows: {(g, c): (H,)}."""
    protos = {}
    for g in groups.unique().tolist():
        for c in labels[groups == g].unique().tolist():
            protos[(g, c)] = emb[(groups == g) & (labels == c)].mean(0)
    return protos


def typicality_scores(emb: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, alpha: float = 0.5,
                      same_labels: bool = True) -> torch.Tensor:
    """Raw scores (N,) as in the module docstring (before clipping and normalising)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    protos = prototypes(emb, labels, groups)
    keys = list(protos)
    sims = F.normalize(emb, dim=-1) @ F.normalize(torch.stack([protos[k] for k in keys]), dim=-1).T  # (N, P)
    column = {k: j for j, k in enumerate(keys)}
    columns_of = {h: [j for j, k in enumerate(keys) if k[0] == h] for h in sorted({g for g, _ in keys})}
    scores = torch.empty(len(emb))
    for i, (g, c) in enumerate(zip(groups.tolist(), labels.tolist())):
        own = sims[i, column[(g, c)]]
        if same_labels:  # the same class in each other group that has it
            others = [sims[i, column[(h, c)]] for h in columns_of if h != g and (h, c) in column]
        else:  # the nearest class of each other group
            others = [sims[i, cols].max() for h, cols in columns_of.items() if h != g]
        # no other group has the class: the row is scored on its own group alone (a mean over
        # nothing is undefined, and counting it as 0 would halve the score of a unique class)
        scores[i] = own if not others else alpha * own + (1 - alpha) * torch.stack(others).mean()
    return scores


def normalise_per_group(scores: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Clip at 0, then scale each group's weights to mean 1 (so they sum to the group's row count)."""
    weights = scores.clamp_min(0.0).clone()
    for g in groups.unique():
        rows = groups == g
        total = weights[rows].sum()
        weights[rows] = weights[rows] * rows.sum() / total if total > 0 else 1.0
    return weights


def typicality_weights(emb: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, alpha: float = 0.5,
                       same_labels: bool = True) -> torch.Tensor:
    """Per-row loss weights (N,): typicality scores, clipped at 0, mean 1 within each group."""
    return normalise_per_group(typicality_scores(emb, labels, groups, alpha, same_labels), groups)


def class_relations(emb: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """The (group, class) keys and their prototype cosine-similarity matrix (P, P): Meta-DTL's
    task/class relations, reported with the results."""
    protos = prototypes(emb, labels, groups)
    keys = sorted(protos)
    stacked = F.normalize(torch.stack([protos[k] for k in keys]), dim=-1)
    return keys, stacked @ stacked.T
