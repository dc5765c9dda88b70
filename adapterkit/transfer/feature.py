"""Feature-based transfer on adapters: a shared feature space is a shared adapter, a domain's
private space is its own adapter next to it (EasyTransfer, Qiu et al. 2021, sections 2.2 and 4.2,
table 8). Every step trains on one target batch and one source batch (source domains in turn),
for `epochs` passes over the target rows; heads read the mean-pooled sentence feature (kit.py).

- fs: FullyShared (Mou et al., EMNLP 2016, https://aclanthology.org/D16-1046; the paper's [25]).
- ss / ss-adv: SharedPrivate (Liu, Qiu & Huang, ACL 2017, https://aclanthology.org/P17-1001).
- drss / drss-adv: Domain-Relationship Specific-Shared (Yu et al., WSDM 2018,
  https://arxiv.org/abs/1711.08726).
"""
from __future__ import annotations

import re
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from adapterkit.model import get_bank
from adapterkit.toolkit.features import masked_mean
from adapterkit.toolkit.schedule import fit
from adapterkit.transfer.grl import DomainClassifier, orthogonality
from adapterkit.transfer.kit import Run, setup
from adapterkit.transfer.registry import TransferSpec, register_algorithm

SS_OPTIONS = {"adv_weight": 0.05, "orth_weight": 0.1, "relation_weight": 0.01, "relation_every": 10}


@register_algorithm("fs")
def fully_shared(spec: TransferSpec) -> dict:
    """FullyShared (FS): one adapter and one head trained on target and source batches together.

    Mou et al.'s fully shared network: every domain goes through the same adapter and the same
    output layer. It differs from the `mixed` baseline in the sampling: each step sees one
    target batch and one source batch (loss = sum of both), so the few target rows are not
    drowned by the many source rows.
    """
    run, _ = setup(spec)
    steps = train_fully_shared(run)
    return run.result(["shared"], "shared", steps=steps)


def train_fully_shared(run: Run, source_rows: dict[str, list[dict]] | None = None) -> int:
    """Adapter `shared` + head `shared` on one target and one source batch per step; returns the steps.
    `source_rows` replaces the source domains' train rows (instance selection passes its pick)."""
    run.add_adapters("shared")
    run.add_heads("shared")
    target, sources = run.stream(run.target.train), run.source_stream(source_rows)

    def step(i: int) -> torch.Tensor:
        _, source = next(sources)
        return run.loss(next(target), ["shared"], "shared") + run.loss(source, ["shared"], "shared")

    return len(fit(run.params(["shared"]), run.steps(len(run.target.train)), step, run.spec.lr))


def shared_private(spec: TransferSpec, adversarial: bool, relational: bool) -> dict:
    """Train `SharedPrivate` on target and source batches; score the target's shared + private stack."""
    run, opts = setup(spec, SS_OPTIONS)
    model = SharedPrivate(run, adversarial, relational, opts)
    steps = model.train()
    info = {"relationship": model.relation.table()} if relational else {}
    return run.result(model.adapters(spec.target), spec.target, "parallel", steps=steps, **info)


class SharedPrivate:
    """A shared adapter and one private adapter per domain, summed in parallel; one head per domain.

    Parallel, not stacked: in Liu et al. the shared and the private encoder read the same input
    side by side. With `set_active([shared, private], "parallel")` both adapters read the same
    hidden state at every site and their updates add up, so each one's contribution stays a
    separate feature (what the orthogonality penalty compares); stacked, the private adapter
    would read the shared one's output. One head per domain reads the pooled result.

    Adversarial (ss-adv, drss-adv): a domain classifier over all domains reads the shared space
    alone (a second forward with only the shared adapter active, mean-pooled) through gradient
    reversal, so the shared adapter learns domain-invariant features and private adapters get
    no adversarial gradient. The orthogonality penalty ||S^T P||_F^2 (grl.orthogonality: on
    L2-normalised rows, over B^2, so in [0, 1]) is taken at every adapted site between the
    shared and the private adapter's updates (output - input), mean-pooled over tokens,
    averaged over sites. Weights: adv_weight 0.05 (Liu et al.'s); orth_weight 0.1 (theirs, 0.01,
    multiplied an unnormalised sum; 0.1 keeps the bounded term below a typical task loss).

    Relational (drss, drss-adv): see `Relationship`.
    """

    def __init__(self, run: Run, adversarial: bool, relational: bool, opts: dict):
        self.run, self.opts, self.adversarial = run, opts, adversarial
        self.domains = [*run.sources, run.spec.target]
        self.private = {d: f"private_{re.sub(r'[^0-9a-zA-Z_]', '_', d)}" for d in self.domains}
        run.add_adapters("shared", *self.private.values())
        run.add_heads(*self.domains)
        self.classifier = DomainClassifier(run.hidden, len(self.domains)) if adversarial else None
        self.relation = Relationship(run, self.domains) if relational else None

    def adapters(self, domain: str) -> list[str]:
        return ["shared", self.private[domain]]

    def loss(self, domain: str, batch: dict) -> torch.Tensor:
        """Task loss of one domain's batch (+ adversarial and orthogonality terms)."""
        run, active = self.run, self.adapters(domain)
        with adapter_updates(run, active if self.adversarial else []) as updates:
            features = run.features(batch, active, "parallel")
        loss = F.cross_entropy(run.heads[domain](features), batch["labels"])
        if self.adversarial:
            shared = run.features(batch, ["shared"])  # the shared space alone
            label = torch.full((len(shared),), self.domains.index(domain))
            loss = loss + self.opts["adv_weight"] * F.cross_entropy(self.classifier(shared, reverse=1.0), label)
            pairs, mask = list(zip(updates["shared"], updates[active[1]])), batch["attention_mask"]
            orth = sum(orthogonality(masked_mean(s, mask), masked_mean(p, mask)) for s, p in pairs) / len(pairs)
            loss = loss + self.opts["orth_weight"] * orth
        return loss

    def train(self) -> int:
        """One target and one source batch per step (+ the relationship penalty); returns the steps."""
        run = self.run
        target, sources = run.stream(run.target.train), run.source_stream()

        def step(i: int) -> torch.Tensor:
            loss = self.loss(run.spec.target, next(target)) + self.loss(*next(sources))
            if self.relation is not None:
                if i % self.opts["relation_every"] == 0:
                    self.relation.update()
                loss = loss + self.opts["relation_weight"] * self.relation.penalty()
            return loss

        extra = [self.classifier] if self.classifier is not None else []
        params = run.params(["shared", *self.private.values()], *extra)
        return len(fit(params, run.steps(len(run.target.train)), step, run.spec.lr))


class Relationship:
    """DRSS's domain-relationship matrix over the domain heads.

    Yu et al. learn the shared representation and the relationship between domains jointly:
    the domains' output layers W = [w_1 .. w_D] (each head flattened to a column) get a
    matrix-normal prior with a D x D domain covariance Omega, i.e. the penalty
    tr(W Omega^-1 W^T), and Omega has the closed-form update (W^T W)^(1/2) / tr((W^T W)^(1/2))
    (Zhang & Yeung's multi-task relationship learning, UAI 2010), done every `relation_every`
    steps. Related domains' heads are pulled together through Omega^-1, so the few-shot target
    head borrows from the source heads in proportion to how related they turn out to be. The
    learned Omega is reported (`relationship` in the result). This is our reading of Yu et al.
    (relationship learning on the domain-specific output layers, with Omega learned from them
    rather than fixed); their full text was not at hand offline, so check it against the paper.
    """

    def __init__(self, run: Run, domains: list[str], eps: float = 1e-3):
        self.run, self.domains, self.eps = run, domains, eps
        self.omega = torch.eye(len(domains)) / len(domains)
        self.omega_inv = torch.linalg.inv(self.omega)

    def weights(self) -> torch.Tensor:
        heads = [self.run.heads[d] for d in self.domains]
        return torch.stack([torch.cat([h.weight.flatten(), h.bias]) for h in heads], dim=1)  # (P, D)

    def penalty(self) -> torch.Tensor:
        w = self.weights()
        return (w @ self.omega_inv * w).sum()  # tr(W Omega^-1 W^T)

    @torch.no_grad()
    def update(self) -> None:
        w = self.weights()
        values, vectors = torch.linalg.eigh(w.T @ w)
        root = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T  # (W^T W)^(1/2)
        omega = root / root.trace() + self.eps * torch.eye(len(self.domains))
        self.omega = omega / omega.trace()
        self.omega_inv = torch.linalg.inv(self.omega)

    def table(self) -> dict[str, dict[str, float]]:
        self.update()
        return {a: {b: round(float(self.omega[i, j]), 4) for j, b in enumerate(self.domains)}
                for i, a in enumerate(self.domains)}


@contextmanager
def adapter_updates(run: Run, names: list[str]):
    """Collect each named adapter's update (output - input, (B, T, H)) at every site it runs at, in order."""
    bank, out, handles = get_bank(run.model), {n: [] for n in names}, []
    for name in names:
        for module in bank.adapters[name].values():
            handles.append(module.register_forward_hook(lambda m, args, y, name=name: out[name].append(y - args[0])))
    try:
        yield out
    finally:
        for handle in handles:
            handle.remove()


def _variant(name: str, adversarial: bool, relational: bool, summary: str):
    def algorithm(spec: TransferSpec) -> dict:
        return shared_private(spec, adversarial, relational)

    algorithm.__doc__ = f"{summary}\n\nSee `adapterkit.transfer.feature.SharedPrivate`."
    algorithm.__name__ = name.replace("-", "_")
    register_algorithm(name)(algorithm)
    return algorithm


ss = _variant("ss", False, False, "SharedPrivate (SS): shared + per-domain private adapters in parallel, domain heads.")
ss_adv = _variant("ss-adv", True, False, "SS-Adv: SS + domain classifier (reversed gradient) + orthogonality.")
drss = _variant("drss", False, True, "DRSS: SS + a learned domain-relationship matrix over the domain heads.")
drss_adv = _variant("drss-adv", True, True, "DRSS-Adv: DRSS + domain classifier (reversed gradient) + orthogonality.")
