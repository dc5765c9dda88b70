"""Instance-based transfer on adapters: choose which source examples the transfer model learns
from (EasyTransfer, Qiu et al. 2021, sections 2.2 and 4.2, table 9). The transfer model is the
FullyShared one (feature.py: a shared adapter and head, one target and one source batch per
step), cheap to re-train because only the adapter and head train.

- ruder-plank: score source examples by similarity/diversity features, keep the best, with the
  feature weights found by Bayesian optimisation (Ruder & Plank, EMNLP 2017).
- rtl: a reinforced selector picks source examples in every batch; the change in target dev
  performance is its delayed reward (Qu et al., WSDM 2019).
- mgtl: RTL plus a domain discriminator that gives immediate rewards and pushes the transfer
  model towards domain-invariant features (Wang et al., KDD 2019).
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from adapterkit.errors import AdapterkitError
from adapterkit.transfer import similarity
from adapterkit.toolkit.schedule import fit
from adapterkit.transfer.feature import train_fully_shared
from adapterkit.transfer.grl import DomainClassifier
from adapterkit.transfer.kit import Run, setup
from adapterkit.transfer.registry import TransferSpec, register_algorithm
from adapterkit.transfer.selector import Baseline, Selector, immediate_advantages, reinforce_loss

RP_OPTIONS = {"keep": 0.5, "bo_init": 10, "bo_iter": 20}
RL_OPTIONS = {"episode": 5, "reward_rows": 64, "reward": "loss", "selector_lr": 0.01,
              "adv_weight": 0.1, "immediate_weight": 1.0}
ADAPTER = ["shared"]


@register_algorithm("ruder-plank")
def ruder_plank(spec: TransferSpec) -> dict:
    """Ruder & Plank: Bayesian-optimised similarity/diversity scores pick the source rows kept.

    Cheaper than the paper's search, which re-trains the task model for every candidate
    weight vector: here a candidate is judged by a proxy, a logistic regression on the frozen
    backbone's sentence features trained on (top `keep` fraction of source rows by score +
    target rows) and scored by accuracy on the target dev rows (milliseconds per candidate);
    the search is a Gaussian-process BO with expected improvement (`bo_init` random + `bo_iter`
    guided points, weights in [-1, 1]^13). The adapter transfer model is then trained once,
    on the chosen rows. See adapterkit.transfer.similarity for the features.
    """
    run, opts = setup(spec, RP_OPTIONS)
    if not 0 < opts["keep"] <= 1:
        raise AdapterkitError(f"keep must be a fraction in (0, 1], got {opts['keep']!r}")
    pool = [(d, row) for d in run.sources for row in run.data[d].train]
    frozen = {name: run.frozen_features(rows) for name, rows in
              (("pool", [r for _, r in pool]), ("train", run.target.train), ("dev", run.target.dev))}
    special = set(run.tokenizer.all_special_ids)
    words = run.model.get_input_embeddings().weight.detach()
    phi = similarity.selection_features([r for _, r in pool], run.target.train, frozen["pool"], frozen["train"],
                                        words, special)
    keep = max(1, int(opts["keep"] * len(pool)))
    labels = {k: torch.tensor([r["labels"] for r in rows]) for k, rows in
              (("pool", [r for _, r in pool]), ("train", run.target.train), ("dev", run.target.dev))}

    def objective(w) -> float:
        chosen = (phi @ torch.as_tensor(w, dtype=phi.dtype)).topk(keep).indices
        return _proxy_accuracy(torch.cat([frozen["pool"][chosen], frozen["train"]]),
                               torch.cat([labels["pool"][chosen], labels["train"]]), frozen["dev"], labels["dev"])

    n_init, n_iter = (3, 2) if spec.quick else (opts["bo_init"], opts["bo_iter"])
    w, best, history = similarity.bayes_search(objective, phi.shape[1], n_init, n_iter, spec.seed)
    chosen = (phi @ torch.as_tensor(w, dtype=phi.dtype)).topk(keep).indices.tolist()
    rows = {d: [pool[i][1] for i in chosen if pool[i][0] == d] for d in run.sources}
    steps = train_fully_shared(run, rows)
    return run.result(ADAPTER, "shared", steps=steps, kept={d: len(r) for d, r in rows.items()},
                      proxy_dev_accuracy=best, weights=dict(zip(similarity.FEATURES, map(float, w))))


def _proxy_accuracy(x: torch.Tensor, y: torch.Tensor, x_dev: torch.Tensor, y_dev: torch.Tensor) -> float:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, max_iter=300).fit(x.numpy(), y.numpy())
    return float((model.predict(x_dev.numpy()) == y_dev.numpy()).mean())


def reinforced(spec: TransferSpec, discriminator: bool) -> dict:
    """RTL / MGTL: a selector keeps or drops each example of every source batch.

    State of a source example: the transfer model's current mean-pooled feature of it
    (L2-normalised), the probability its head gives the true label, and its loss, all read
    from the forward that trains on it (no extra pass). The selected examples' mean loss joins
    the target batch's loss. Every `episode` steps the delayed reward is the change in target
    dev performance on `reward_rows` dev rows (a seeded sample) (`reward`: "loss" = minus the mean
    cross-entropy, smoother than "accuracy" on a few rows); REINFORCE with a moving-average
    baseline updates the selector on all of the episode's decisions (Qu et al. use an
    actor-critic; REINFORCE is the simpler policy gradient with the same reward).

    MGTL (discriminator=True): a domain discriminator reads selected-source and target features
    through gradient reversal (weight `adv_weight`), so the shared adapter learns domain-
    invariant features; each decision also gets an immediate reward (2a - 1)(p_target - 1/2),
    where p_target is the discriminator's probability that the example is a target one: keeping
    target-like examples and dropping source-like ones is rewarded at once.
    """
    run, opts = setup(spec, RL_OPTIONS)
    if opts["reward"] not in ("loss", "accuracy") or int(opts["episode"]) < 1:
        raise AdapterkitError(f"reward must be 'loss' or 'accuracy' and episode >= 1; got {opts['reward']!r}, "
                              f"{opts['episode']!r}")
    run.add_adapters(*ADAPTER)
    run.add_heads("shared")
    dev = random.Random(spec.seed).sample(run.target.dev, min(opts["reward_rows"], len(run.target.dev)))
    selection = Selection(run, dev, opts, episode=2 if spec.quick else opts["episode"], seed=spec.seed)
    critic = DomainClassifier(run.hidden, 2) if discriminator else None  # initialised after the selector
    target, sources = run.stream(run.target.train), run.source_stream()

    def step(i: int) -> torch.Tensor:
        t_batch, (_, s_batch) = next(target), next(sources)
        t_feat, s_feat = run.features(t_batch, ADAPTER), run.features(s_batch, ADAPTER)
        s_logits = run.heads["shared"](s_feat)
        s_losses = F.cross_entropy(s_logits, s_batch["labels"], reduction="none")
        actions = selection.decide(_states(s_feat, s_logits, s_batch["labels"], s_losses))
        loss = run.loss(t_batch, ADAPTER, "shared") + (actions * s_losses).sum() / actions.sum().clamp(min=1)
        if critic is not None:
            d_loss, p_target = _discriminate(critic, s_feat, t_feat, actions)
            loss = loss + opts["adv_weight"] * d_loss
            selection.reward_now(opts["immediate_weight"] * immediate_advantages(actions, p_target))
        return loss

    params = run.params(ADAPTER, *([critic] if critic else []))
    total = run.steps(len(run.target.train))
    steps = len(fit(params, total, step, spec.lr, after_step=lambda i: selection.after_step(i, total)))
    return run.result(ADAPTER, "shared", steps=steps, kept_fraction=selection.kept / max(1, selection.seen),
                      delayed_rewards=[round(r, 5) for r in selection.rewards])


class Selection:
    """The selector's side of RTL/MGTL: its decisions of the current episode, its updates
    (immediate rewards after each step, the delayed reward at the end of each episode of
    `episode` steps: the change in target dev performance) and what it kept."""

    def __init__(self, run: Run, dev: list[dict], opts: dict, episode: int, seed: int) -> None:
        self.run, self.dev, self.kind, self.episode = run, dev, opts["reward"], episode
        self.selector = Selector(run.hidden + 2)
        self.optimizer = torch.optim.Adam(self.selector.parameters(), lr=opts["selector_lr"])
        self.generator = torch.Generator().manual_seed(seed)
        self.baseline, self.perf = Baseline(), _dev_performance(run, dev, self.kind)
        self.decisions: list[tuple[torch.Tensor, torch.Tensor]] = []  # this episode's (states, actions)
        self.immediate: torch.Tensor | None = None  # this step's immediate advantages (MGTL)
        self.rewards: list[float] = []
        self.kept = self.seen = 0

    def decide(self, states: torch.Tensor) -> torch.Tensor:
        """Keep (1.) or drop (0.) each source example of a batch, sampled from the policy."""
        actions = self.selector.act(states, self.generator)
        self.decisions.append((states, actions))
        self.kept, self.seen = self.kept + int(actions.sum()), self.seen + len(actions)
        return actions

    def reward_now(self, advantages: torch.Tensor) -> None:
        self.immediate = advantages

    def after_step(self, step: int, total: int) -> None:
        """The immediate update of this step's decisions; at an episode's end, the delayed one."""
        if self.immediate is not None:
            self._update(*self.decisions[-1], self.immediate)
            self.immediate = None
        if (step + 1) % self.episode == 0 and step + 1 < total:
            perf = _dev_performance(self.run, self.dev, self.kind)
            reward, self.perf = perf - self.perf, perf
            self.rewards.append(reward)
            states, actions = (torch.cat(x) for x in zip(*self.decisions))
            self._update(states, actions, torch.tensor(self.baseline.advantage(reward)))
            self.decisions = []

    def _update(self, states: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor) -> None:
        self.optimizer.zero_grad()
        reinforce_loss(self.selector, states, actions, advantages).backward()
        self.optimizer.step()


def _states(features, logits, labels, losses) -> torch.Tensor:
    """(B, H + 2): normalised feature, p(true label), loss; detached."""
    p_true = logits.softmax(-1).gather(1, labels[:, None]).squeeze(1)
    return torch.cat([F.normalize(features, dim=-1), p_true[:, None], losses[:, None]], -1).detach()


def _discriminate(critic: DomainClassifier, s_feat, t_feat, actions) -> tuple[torch.Tensor, torch.Tensor]:
    """Discriminator loss on selected source (0) vs target (1) through gradient reversal, and
    each source example's p(target) (detached)."""
    logits = critic(torch.cat([s_feat, t_feat]), reverse=1.0)
    labels = torch.cat([torch.zeros(len(s_feat), dtype=torch.long), torch.ones(len(t_feat), dtype=torch.long)])
    weights = torch.cat([actions, torch.ones(len(t_feat))])
    loss = (F.cross_entropy(logits, labels, reduction="none") * weights).sum() / weights.sum()
    return loss, logits.detach().softmax(-1)[: len(s_feat), 1]


def _dev_performance(run: Run, dev: list[dict], kind: str) -> float:
    logits = run.logits(dev, ADAPTER, "shared")
    labels = torch.tensor([r["labels"] for r in dev])
    if kind == "accuracy":
        return float((logits.argmax(-1) == labels).float().mean())
    return -float(F.cross_entropy(logits, labels))


@register_algorithm("rtl")
def rtl(spec: TransferSpec) -> dict:
    """RTL: a REINFORCE-trained selector picks source rows; delayed reward = change in target dev performance."""
    return reinforced(spec, discriminator=False)


@register_algorithm("mgtl")
def mgtl(spec: TransferSpec) -> dict:
    """MGTL: RTL + a domain discriminator (gradient reversal) that also gives immediate rewards."""
    return reinforced(spec, discriminator=True)
