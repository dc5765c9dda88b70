"""Building the flexible multi-task model (Wei et al. 2022, section 3 and appendix D):

1. partial fine-tuning: for each task and each L in [n_min, n_max], fine-tune only the top L
   layers (and the head) of the pre-trained backbone; keep the L with the best dev score;
2. distillation: compress those L layers into l = 1..min(3, L-1) layers initialised from the
   teacher's first l fine-tuned layers (the student is the teacher's bottom N-L+l layers), with
   vanilla KD (the paper's choice: soft targets at temperature T mixed with the labels);
3. the budget picks one candidate per task: "kd1"/"kd2"/"kd3" (l layers, or the teacher when L is
   smaller), "teacher" (no KD), or "mixed": the growth rule with threshold c (`choose_layers`);
4. merging: every candidate branches off the same frozen trunk, so `MultiTaskModel.add_branch`
   puts them together with the trunk run once.
Adapter variant (`adapter=BottleneckConfig`, `branch_layer=B`): per task an adapter in layers
B..N-1 only, trained with the backbone frozen; merged with `add_model`.

The frozen bottom layers never change, so their outputs are computed once per task and split
(`trunk_states`); every epoch then runs only the layers above the branching point. The trunk's
own dropout is therefore off while branches train.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from adapterkit.errors import AdapterkitError
from adapterkit.precision import check_names as check_precision, under_precision
from adapterkit.toolkit.batching import batches, pad, shuffled
from adapterkit.toolkit.features import in_row_order
from adapterkit.toolkit.schedule import fit
from adapterkit.transfer.kd_losses import hard_ce, soft_kl
from adapterkit.multitask.model import Branch, Head, MultiTaskModel, clone, task_parts
from adapterkit.slicing import StackSlicer

BUDGETS = ("kd1", "kd2", "kd3", "teacher", "mixed", "adapter")


@dataclass
class MultiTaskConfig:
    """Settings of `build_multitask`. Scores and `c` are in metric points (x100)."""

    tasks: list[str] = field(default_factory=lambda: ["cola", "sst2", "mrpc", "rte"])
    model: str | None = None
    n_min: int = 2
    n_max: int = 5
    max_student_layers: int = 3
    budget: str = "mixed"
    c: float = 1.0
    epochs: int = 3
    kd_epochs: int = 3
    lr: float = 5e-5
    kd_lr: float = 1e-4
    temperature: float = 2.0
    alpha: float = 0.5
    batch_size: int = 32
    max_seq_len: int = 128
    train_limit: int | None = None
    seed: int = 42  # as every CLI command
    data_dir: str | None = None
    adapter: dict | None = None  # BottleneckConfig fields for the adapter variant
    branch_layer: int | None = None  # adapter variant: adapters only in layers >= branch_layer
    precision: str = "fp32"  # build/add run under this autocast (adapterkit.precision)

    def __post_init__(self) -> None:
        if self.budget not in BUDGETS:
            raise AdapterkitError(f"budget must be one of {', '.join(BUDGETS)}; got {self.budget!r}")
        if not 1 <= self.n_min <= self.n_max:
            raise AdapterkitError(f"need 1 <= n_min <= n_max, got [{self.n_min}, {self.n_max}]")
        if not 1 <= self.max_student_layers <= 3:
            raise AdapterkitError(f"students have 1 to 3 task layers (the paper's l <= 3), got {self.max_student_layers}")
        if self.budget == "adapter" and (self.adapter is None or self.branch_layer is None):
            raise AdapterkitError("the adapter variant needs adapter settings and a branch layer")
        if not self.tasks:
            raise AdapterkitError("give at least one task")
        check_precision(self.precision)
        from adapterkit.config import check_number, check_settings

        check_settings(self)
        check_number("c", self.c)
        if self.branch_layer is not None:
            check_number("branch_layer", self.branch_layer, minimum=0, integer=True)
        if self.adapter is not None:
            from adapterkit.config import BottleneckConfig

            BottleneckConfig(**self.adapter)  # refuses a bad width now, not after the search

    def to_dict(self) -> dict:
        return asdict(self)


def task_score(metrics: dict[str, float]) -> float:
    """The paper's number for a task (x100): Matthews correlation for CoLA, else accuracy."""
    return 100.0 * metrics.get("matthews_correlation", metrics.get("accuracy", math.nan))


def shown(score: float) -> str:
    """A task_score as printed: on the 0-1 scale `adapterkit train` and `eval` use."""
    return f"{score / 100:.4f}"


def choose_layers(candidates: list[tuple[int, float]], c: float) -> int:
    """The growth rule: index of the chosen (task layers, dev score) candidate.

    Start from the smallest; repeatedly move to the smallest larger candidate whose gain per
    added layer is at least `c`; stop when there is none. On the paper's table 5 scores this picks
    exactly the paper's branches for c = 1, 2 and 3 (tests/test_multitask.py)."""
    order = sorted(range(len(candidates)), key=lambda i: candidates[i][0])
    current = order[0]
    while True:
        layers, score = candidates[current]
        better = [i for i in order if candidates[i][0] > layers
                  and (candidates[i][1] - score) / (candidates[i][0] - layers) >= c]
        if not better:
            return current
        current = better[0]


@dataclass
class Candidate:
    name: str  # "teacher", "kd1", ... or "adapter"
    branch_layer: int
    num_layers: int
    dev: dict[str, float]
    branch: Branch
    model: nn.Module | None = None  # adapter variant: the backbone carrying the task's adapter

    @property
    def score(self) -> float:
        return task_score(self.dev)


@dataclass
class TaskResult:
    task: str
    search: dict[int, float]  # L -> dev score of the partially fine-tuned teacher
    best_L: int
    candidates: list[Candidate]
    seconds: float = 0.0

    def pick(self, budget: str, c: float = 1.0) -> Candidate:
        by_name = {cand.name: cand for cand in self.candidates}
        if budget in ("teacher", "adapter"):
            return by_name[budget]
        if budget == "mixed":
            return self.candidates[choose_layers([(k.num_layers, k.score) for k in self.candidates], c)]
        return by_name.get(budget, by_name["teacher"])

    def summary(self) -> dict:
        return {"task": self.task, "search": self.search, "best_L": self.best_L, "seconds": self.seconds,
                "candidates": {k.name: {"branch": [k.branch_layer, k.num_layers], "score": k.score, "dev": k.dev}
                               for k in self.candidates}}


class BranchNet(nn.Module):
    """A task's layers and head on trunk states (a model's slicer runs them, its family's way)."""

    def __init__(self, slicer: StackSlicer, layers: nn.ModuleList, head: Head) -> None:
        super().__init__()
        object.__setattr__(self, "slicer", slicer)  # the model it was cut from: not a submodule
        self.layers, self.head = layers, head

    def forward(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.slicer.run(states, attention_mask, 0, len(self.layers), layers=self.layers)
        return self.slicer.head(states, attention_mask, parts=self.head.by_path())


@torch.inference_mode()
def trunk_states(model: nn.Module, rows: list[dict], depth: int, pad_id: int = 0, batch_size: int = 64) -> list[torch.Tensor]:
    """Hidden states after the embeddings and the bottom `depth` layers, one (T_i, H) per row."""
    from adapterkit.toolkit.batching import batches

    slicer = StackSlicer(model)
    model.eval()
    out: list[torch.Tensor] = [None] * len(rows)  # type: ignore[list-item]
    for batch in batches(rows, batch_size, pad_id, seed=None):
        mask = batch["attention_mask"]
        states = slicer.embed(batch["input_ids"], mask, batch.get("token_type_ids"))
        states = slicer.run(states, mask, 0, depth)  # (B, T, H)
        for i, row in enumerate(batch["_rows"]):
            out[row] = states[i, : len(rows[row]["input_ids"])].clone()
    return out


def state_batches(states: list[torch.Tensor], order: list[int], batch_size: int):
    """Padded (states (B, T, H), attention_mask (B, T), row indices) batches in `order`."""
    for batch in batches(states, batch_size, order=order, make=lambda part: dict(zip(("x", "mask"), pad(part)))):
        yield batch["x"], batch["mask"], torch.tensor(batch["_rows"])


def branch_logits(net: BranchNet, states: list[torch.Tensor], batch_size: int = 64) -> torch.Tensor:
    net.eval()
    batched = ({"x": x, "mask": m, "_rows": idx} for x, m, idx in state_batches(states, list(range(len(states))), batch_size))
    return in_row_order(batched, lambda b: net(b["x"], b["mask"]), len(states))


def train_branch(net: BranchNet, states: list[torch.Tensor], labels: torch.Tensor, epochs: int, lr: float,
                 batch_size: int, seed: int, teacher_logits: torch.Tensor | None = None,
                 temperature: float = 2.0, alpha: float = 0.5, params: list | None = None) -> list[float]:
    """Cross-entropy (or, with `teacher_logits`, vanilla KD) on cached trunk states; trains
    `params` (default: the net's parameters that require gradients)."""
    params = params if params is not None else [p for p in net.parameters() if p.requires_grad]
    per_epoch = math.ceil(len(states) / batch_size)

    def stream():
        for epoch in range(epochs):
            yield from state_batches(states, shuffled(len(states), seed * 1000 + epoch), batch_size)

    it = stream()
    net.train()

    def loss_fn(step: int) -> torch.Tensor:
        x, mask, idx = next(it)
        logits = net(x, mask)
        if teacher_logits is None:
            return F.cross_entropy(logits.float(), labels[idx])
        soft = soft_kl(logits, teacher_logits[idx], temperature)
        return (alpha * soft + (1 - alpha) * hard_ce(logits, labels[idx])).mean()

    losses = fit(params, per_epoch * epochs, loss_fn, lr, title="train branch")
    net.eval()
    return losses


def load_task_rows(task, tokenizer, cfg: MultiTaskConfig) -> tuple[list[dict], list[dict]]:
    """Encoded train rows (a seeded sample of `train_limit` rows) and every dev row of a GLUE task."""
    from adapterkit.data import encode, load_glue

    train = load_glue(task, "train", cfg.data_dir)
    if cfg.train_limit and cfg.train_limit < len(train):
        train = train.shuffle(seed=0).select(range(cfg.train_limit))
    dev = load_glue(task, "dev", cfg.data_dir)
    return ([dict(r) for r in encode(train, tokenizer, task, cfg.max_seq_len)],
            [dict(r) for r in encode(dev, tokenizer, task, cfg.max_seq_len)])


def pretrained_for(task, cfg: MultiTaskConfig) -> nn.Module:
    """The pre-trained backbone with a fresh (seeded) head for `task`."""
    from adapterkit import backbone

    torch.manual_seed(cfg.seed)
    return backbone.load_model(cfg.model, num_labels=task.num_labels).eval()


def fit_task(name: str, cfg: MultiTaskConfig, tokenizer, log=print) -> TaskResult:
    """Search L, distil the best teacher into 1..3 layers; every candidate scored on dev."""
    import time

    from adapterkit.data import get_task

    t0, task = time.perf_counter(), get_task(name)
    base = pretrained_for(task, cfg)
    train, dev = load_task_rows(task, tokenizer, cfg)
    search, (L, teacher, states, metrics) = _search(task, base, train, dev, cfg, tokenizer.pad_token_id or 0, log)
    b = len(task_parts(base)[1]) - L
    candidates = [Candidate("teacher", b, L, metrics, Branch("layers", b, teacher.layers, teacher.head))]
    candidates += _students(task, teacher, b, L, train, dev, states, cfg, log)
    return TaskResult(name, search, L, sorted(candidates, key=lambda k: k.num_layers), time.perf_counter() - t0)


def _search(task, base, train, dev, cfg: MultiTaskConfig, pad: int, log):
    """Partially fine-tune the top L layers for every L in range; ({L: score}, best (L, net, states, metrics))."""
    from adapterkit.data.metrics import compute_metrics

    slicer, layers, head = task_parts(base)
    n, labels, dev_labels = len(layers), torch.tensor([r["labels"] for r in train]), [r["labels"] for r in dev]
    search, best = {}, None
    for L in range(cfg.n_min, min(cfg.n_max, n) + 1):
        states = trunk_states(base, train, n - L, pad), trunk_states(base, dev, n - L, pad)
        torch.manual_seed(cfg.seed)
        net = BranchNet(slicer, nn.ModuleList(clone(x) for x in layers[n - L:]), clone(head))
        train_branch(net, states[0], labels, cfg.epochs, cfg.lr, cfg.batch_size, cfg.seed)
        metrics = compute_metrics(task, branch_logits(net, states[1]).numpy(), dev_labels)
        search[L] = task_score(metrics)
        log(f"{task.name}: fine-tuned top {L} layers: dev {shown(search[L])}")
        if best is None or search[L] > search[best[0]]:
            best = (L, net, states, metrics)
    return search, best


def _students(task, teacher: BranchNet, b: int, L: int, train, dev, states, cfg: MultiTaskConfig, log):
    """Vanilla KD of the teacher's L layers into l = 1..min(3, L-1) layers initialised from its first l."""
    from adapterkit.data.metrics import compute_metrics

    (tr_states, dev_states), labels = states, torch.tensor([r["labels"] for r in train])
    soft, out = branch_logits(teacher, tr_states), []
    for l in range(1, min(cfg.max_student_layers, L - 1) + 1):
        torch.manual_seed(cfg.seed)
        student = BranchNet(teacher.slicer, nn.ModuleList(clone(x) for x in teacher.layers[:l]), clone(teacher.head))
        train_branch(student, tr_states, labels, cfg.kd_epochs, cfg.kd_lr, cfg.batch_size, cfg.seed,
                     teacher_logits=soft, temperature=cfg.temperature, alpha=cfg.alpha)
        m = compute_metrics(task, branch_logits(student, dev_states).numpy(), [r["labels"] for r in dev])
        out.append(Candidate(f"kd{l}", b, l, m, Branch("layers", b, student.layers, student.head)))
        log(f"{task.name}: student ({b},{l}): dev {shown(task_score(m))}")
    return out


def fit_adapter_task(name: str, cfg: MultiTaskConfig, tokenizer, log=print) -> TaskResult:
    """The adapter variant: an adapter in layers >= branch_layer (backbone frozen) and a head."""
    import time

    from adapterkit.config import BottleneckConfig
    from adapterkit.data import get_task
    from adapterkit.data.metrics import compute_metrics
    from adapterkit.model import adapter_parameters, add_adapter, head_parameters

    t0, task = time.perf_counter(), get_task(name)
    model = pretrained_for(task, cfg)
    slicer, layers, head = task_parts(model)
    b, n = cfg.branch_layer, len(layers)
    if not 0 <= b < n:
        raise AdapterkitError(f"branch layer {b} out of range for a {n}-layer backbone")
    add_adapter(model, name, BottleneckConfig.from_dict({**(cfg.adapter or {}), "layers": list(range(b, n))}))
    train, dev = load_task_rows(task, tokenizer, cfg)
    pad = tokenizer.pad_token_id or 0
    model.requires_grad_(False)
    params = [*adapter_parameters(model, name).values(), *head_parameters(model).values()]
    for p in params:
        p.requires_grad_(True)
    net = BranchNet(slicer, layers[b:], head)  # the model's own modules: its adapter hooks run
    train_branch(net, trunk_states(model, train, b, pad), torch.tensor([r["labels"] for r in train]),
                 cfg.epochs, cfg.lr, cfg.batch_size, cfg.seed, params=params)
    m = compute_metrics(task, branch_logits(net, trunk_states(model, dev, b, pad)).numpy(), [r["labels"] for r in dev])
    log(f"{name}: adapter above layer {b}: dev {shown(task_score(m))}")
    cand = Candidate("adapter", b, n - b, m, Branch("layers", b, nn.ModuleList(), Head(head.by_path())))
    cand.model = model
    return TaskResult(name, {}, n - b, [cand], time.perf_counter() - t0)


def assemble(results: list[TaskResult], source: nn.Module, budget: str, c: float = 1.0) -> MultiTaskModel:
    """One merged model: per task the candidate `budget` picks, all on `source`'s frozen trunk."""
    merged = MultiTaskModel.from_backbone(source)
    for r in results:
        add_candidate(merged, r.task, r.pick(budget, c), source)
    return merged


def add_candidate(merged: MultiTaskModel, task: str, cand: Candidate, source: nn.Module) -> None:
    """Merge one candidate (copied, so several merged models can share the same candidates)."""
    info = {"task": task, "candidate": cand.name, "dev": cand.dev, "score": cand.score}
    if cand.name == "adapter":
        merged.add_model(task, cand.model, cand.branch_layer, info)
    else:
        branch = Branch("layers", cand.branch_layer, clone(cand.branch.layers), clone(cand.branch.head), info)
        merged.add_branch(task, branch, source)


@under_precision("cfg")
def add_task(merged: MultiTaskModel, name: str, cfg: MultiTaskConfig, replace: bool = False, log=print) -> str:
    """Train task `name` (search, distil, pick by `cfg.budget`) and add it to `merged`; other
    branches are not touched. With `replace`, an existing branch of that task is swapped."""
    from adapterkit import backbone

    if name in merged.branches and not replace:
        raise AdapterkitError(f"task {name!r} is already in the model; pass replace=True (--replace) to update it")
    backbone.check_positions(backbone.load_config(cfg.model), cfg.max_seq_len)
    tokenizer = backbone.load_tokenizer(cfg.model)
    result = (fit_adapter_task if cfg.budget == "adapter" else fit_task)(name, cfg, tokenizer, log)
    cand = result.pick(cfg.budget, cfg.c)
    source = backbone.load_model(cfg.model, num_labels=2)
    if name in merged.branches:
        merged.remove(name)
    add_candidate(merged, name, cand, source)
    return f"({cand.branch_layer},{cand.num_layers}) {cand.name}, dev {shown(cand.score)}"


@under_precision("cfg")
def build_multitask(cfg: MultiTaskConfig, log=print) -> tuple[MultiTaskModel, list[TaskResult], object]:
    """Run the whole pipeline for `cfg.tasks`; returns (merged model, per-task results, tokenizer)."""
    from adapterkit import backbone

    backbone.check_positions(backbone.load_config(cfg.model), cfg.max_seq_len)
    tokenizer = backbone.load_tokenizer(cfg.model)
    fit = fit_adapter_task if cfg.budget == "adapter" else fit_task
    results = [fit(name, cfg, tokenizer, log) for name in cfg.tasks]
    source = backbone.load_model(cfg.model, num_labels=2)
    merged = assemble(results, source, cfg.budget, cfg.c)
    merged.base_model_name = cfg.model
    return merged, results, tokenizer
