"""The flexible multi-task model: one frozen trunk run once per input, one branch per task.

Wei, Qi, He. "A Flexible Multi-Task Model for BERT Serving." ACL 2022 (short).
https://aclanthology.org/2022.acl-short.89/ (arXiv https://arxiv.org/abs/2107.05377).

Every task model that can be merged shares the pre-trained embeddings and bottom layers
unchanged. A task's branch starts at its branching layer b (the number of shared layers under it):
  kind "layers":  its own l transformer layers (a partially fine-tuned teacher's top layers, or a
                  student distilled into few layers) and its head (pooler + classifier);
  kind "adapter": per-task adapters in the *shared* pre-trained layers b..N-1 plus its head: no
                  extra layer weights, but layers b..N-1 run once per adapter task.
`forward` runs the embeddings and trunk layers once, up to the highest branching layer the
requested tasks need, then each requested task's branch on the rows that asked for it
(`row_tasks`: a per-example choice inside one batch). `add_model` takes a standalone
Hugging Face model (BERT-style: embeddings, encoder.layer, pooler, classifier), checks that its
bottom b layers are bit-identical to the trunk and copies its upper part in; `remove` drops a
task; neither touches another task's weights. `extract(task)` rebuilds the standalone model.

Saved as a folder: multitask.json (manifest: backbone config, trunk depth, one entry per branch),
trunk.safetensors and branch-<task>.safetensors; adding or removing a task rewrites only the
manifest and that task's file (and the trunk when its depth changes). Never pickle.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from adapterkit.errors import AdapterkitError
from adapterkit.toolkit.features import adapters_off

FORMAT, FORMAT_VERSION = "adapterkit.multitask", 1
MANIFEST, TRUNK_FILE = "multitask.json", "trunk.safetensors"
KINDS = ("layers", "adapter")


def bert_parts(model: nn.Module) -> tuple[nn.Module, nn.ModuleList, nn.Module]:
    """(embeddings, layers, head) of a BERT-style sequence classifier; head = pooler+dropout+classifier."""
    base = getattr(model, "base_model", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if base is None or layers is None or getattr(base, "pooler", None) is None or not hasattr(model, "classifier"):
        raise AdapterkitError(f"multi-task merging needs a BERT-style classifier (embeddings, encoder.layer, pooler, "
                              f"classifier); {type(model).__name__} is not one")
    return base.embeddings, layers, Head(base.pooler, model.dropout, model.classifier)


class Head(nn.Module):
    """BERT's classification head: pooler ([CLS] dense + tanh), dropout, classifier."""

    def __init__(self, pooler: nn.Module, dropout: nn.Module, classifier: nn.Linear) -> None:
        super().__init__()
        self.pooler, self.dropout, self.classifier = pooler, dropout, classifier

    def forward(self, states: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, C)
        return self.classifier(self.dropout(self.pooler(states)))


def attention_mask_for(config, states: torch.Tensor, attention_mask: torch.Tensor | None):
    """The mask the backbone's layers take (what its own forward would build), or None."""
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=config, inputs_embeds=states, attention_mask=attention_mask)


def run_layers(layers, states: torch.Tensor, mask) -> torch.Tensor:
    for layer in layers:
        states = layer(states, mask)
    return states


class Branch(nn.Module):
    def __init__(self, kind: str, branch_layer: int, layers: nn.ModuleList, head: Head, info: dict | None = None):
        super().__init__()
        if kind not in KINDS:
            raise AdapterkitError(f"branch kind must be one of {KINDS}, got {kind!r}")
        self.kind, self.branch_layer, self.layers, self.head = kind, branch_layer, layers, head
        self.info = dict(info or {})

    @property
    def num_layers(self) -> int:
        return len(self.layers)


@dataclass
class MultiTaskOutput:
    """Logits per task; rows[task] = the batch rows they belong to (None: every row)."""

    logits: dict[str, torch.Tensor] = field(default_factory=dict)
    rows: dict[str, torch.Tensor | None] = field(default_factory=dict)


class MultiTaskModel(nn.Module):
    """A shared frozen trunk (embeddings + pre-trained layers) and task branches."""

    def __init__(self, config, embeddings: nn.Module, layers: nn.ModuleList) -> None:
        super().__init__()
        self.config = copy.deepcopy(config)
        self.embeddings, self.layers = embeddings, layers
        self.branches = nn.ModuleDict()
        self.base_model_name: str | None = None  # the backbone tasks are trained from (for `add`)
        self.requires_grad_(False)

    @classmethod
    def from_backbone(cls, model: nn.Module, depth: int = 0) -> "MultiTaskModel":
        """An empty multi-task model on `model`'s embeddings and bottom `depth` layers (copies)."""
        embeddings, layers, _ = bert_parts(model)
        return cls(model.config, clone(embeddings), nn.ModuleList(clone(layer) for layer in layers[:depth])).eval()

    @property
    def tasks(self) -> list[str]:
        return list(self.branches)

    @property
    def full_depth(self) -> int:
        return self.config.num_hidden_layers

    def trunk_depth(self) -> int:
        """Shared layers the current branches need (layer branches: b; adapter branches: all N)."""
        return max([self._needs(b) for b in self.branches.values()], default=0)

    def _needs(self, branch: Branch) -> int:
        return self.full_depth if branch.kind == "adapter" else branch.branch_layer

    def add_model(self, task: str, model: nn.Module, branch_layer: int, info: dict | None = None) -> Branch:
        """Merge a standalone task model whose bottom `branch_layer` layers are the shared ones.

        Its layers above `branch_layer` become the task's branch; when it carries an adapter
        (the adapter variant) that adapter must sit only in layers >= branch_layer and the
        branch runs the shared layers with it."""
        from adapterkit.model import list_adapters

        self._check_new(task)
        embeddings, layers, head = bert_parts(model)
        adapters = list_adapters(model)
        if not 0 <= branch_layer <= len(layers) - (1 if adapters else 0):
            raise AdapterkitError(f"branch layer {branch_layer} out of range for a {len(layers)}-layer model")
        self._grow_trunk(embeddings, layers, len(layers) if adapters else branch_layer)
        if adapters:
            branch = self._adapter_branch(task, model, branch_layer, head, info)
        else:
            branch = Branch("layers", branch_layer, nn.ModuleList(clone(layer) for layer in layers[branch_layer:]),
                            clone(head), info)
        self.branches[task] = branch.requires_grad_(False).eval()
        return branch

    def add_branch(self, task: str, branch: Branch, source: nn.Module) -> Branch:
        """Add a ready branch of kind "layers"; `source` (the pre-trained backbone the branch was
        trained on) supplies trunk layers the model does not hold yet, after the equality check."""
        self._check_new(task)
        if branch.kind != "layers":
            raise AdapterkitError("add_branch takes 'layers' branches; merge adapter models with add_model")
        embeddings, layers, _ = bert_parts(source)
        self._grow_trunk(embeddings, layers, branch.branch_layer)
        self.branches[task] = branch.requires_grad_(False).eval()
        return branch

    def _check_new(self, task: str) -> None:
        if task in self.branches:
            raise AdapterkitError(f"the multi-task model already has a task {task!r}; remove it first")
        if not task.isidentifier():
            raise AdapterkitError(f"task name must be a Python identifier, got {task!r}")

    def _grow_trunk(self, embeddings: nn.Module, layers: nn.ModuleList, shared: int) -> None:
        """Check the model's embeddings and bottom `shared` layers equal the trunk; extend the trunk."""
        if self.config.hidden_size != embeddings.word_embeddings.embedding_dim or len(layers) > self.full_depth:
            raise AdapterkitError("the task model does not fit this multi-task model's backbone")
        overlap = min(shared, len(self.layers))
        for name, ours, theirs in [("embeddings", self.embeddings, embeddings)] + [
                (f"layer {i}", self.layers[i], layers[i]) for i in range(overlap)]:
            if not _same_weights(ours, theirs):
                raise AdapterkitError(f"the task model's {name} differ from the shared trunk's: its bottom "
                                      f"layers must be the frozen pre-trained ones (not fine-tuned)")
        for i in range(len(self.layers), shared):
            self.layers.append(clone(layers[i]).requires_grad_(False).eval())

    def _adapter_branch(self, task: str, model: nn.Module, branch_layer: int, head: Head, info) -> Branch:
        from adapterkit.model import adapter_config, adapter_plan, add_adapter, get_bank, list_adapters

        names = list_adapters(model)
        if len(names) != 1:
            raise AdapterkitError(f"an adapter task model must carry exactly one adapter, found {names}")
        config, plan = adapter_config(model, names[0]), adapter_plan(model, names[0])
        if config.train_layer_norms:
            raise AdapterkitError("an adapter that trains the backbone's layer norms changes the shared layers; it cannot branch")
        if min(s.layer for s in plan.sites) < branch_layer:
            raise AdapterkitError(f"adapter {names[0]!r} has sites below the branch layer {branch_layer}")
        sub = copy.deepcopy(config)
        sub.layers, sub.top_n, sub.leave_out = sorted({s.layer for s in plan.sites}), None, []
        sub.targets = {"layers": r"layers\.\d+"}
        ours = add_adapter(self, task, sub, activate=False)
        theirs = {(s.layer, s.kind): gid for gid, sites in plan.groups.items() for s in sites}
        source = get_bank(model).adapters[names[0]]
        for gid, sites in ours.groups.items():
            get_bank(self).adapters[task][gid].load_state_dict(source[theirs[(sites[0].layer, sites[0].kind)]].state_dict())
        get_bank(self).adapters[task].requires_grad_(False)
        return Branch("adapter", branch_layer, nn.ModuleList(), clone(head), {**(info or {}), "adapter": sub.to_dict()})

    def remove(self, task: str) -> None:
        """Drop a task's branch (and adapter); other branches are untouched; unused trunk layers go."""
        from adapterkit.model import list_adapters, remove_adapter

        if task not in self.branches:
            raise AdapterkitError(f"no task {task!r} in the multi-task model (tasks: {', '.join(self.tasks) or 'none'})")
        del self.branches[task]
        if task in list_adapters(self):
            remove_adapter(self, task)
        del self.layers[max(self.trunk_depth(), 0):]

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, tasks: list[str] | None = None,
                row_tasks: list | None = None) -> MultiTaskOutput:
        """Run the trunk once and the branches of `tasks` on every row, or with `row_tasks` (one
        task name, or a list of names, per row) each branch on the rows that asked for it."""
        requested = self._requested(len(input_ids), tasks, row_tasks)
        depth = max((self._trunk_needed(t) for t in requested), default=0)
        states = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)  # (B, T, H)
        mask = attention_mask_for(self.config, states, attention_mask)
        at = {0: states}
        with adapters_off(self):
            for i in range(depth):
                states = self.layers[i](states, mask)
                at[i + 1] = states
        out = MultiTaskOutput()
        for task, rows in requested.items():
            branch = self.branches[task]
            x, m = at[branch.branch_layer], mask
            if rows is not None:
                x, m = x[rows], (m[rows] if m is not None else None)
            out.logits[task], out.rows[task] = branch.head(self._run_branch(task, branch, x, m)), rows
        return out

    def _trunk_needed(self, task: str) -> int:
        return self.branches[task].branch_layer

    def _run_branch(self, task: str, branch: Branch, x: torch.Tensor, mask) -> torch.Tensor:
        if branch.kind == "layers":
            return run_layers(branch.layers, x, mask)
        from adapterkit.model import set_active

        set_active(self, [task])
        try:
            return run_layers(self.layers[branch.branch_layer:], x, mask)
        finally:
            set_active(self, [])

    def _requested(self, n: int, tasks, row_tasks) -> dict[str, torch.Tensor | None]:
        if tasks is not None and row_tasks is not None:
            raise AdapterkitError("give tasks (for every row) or row_tasks (per row), not both")
        if row_tasks is None:
            names = self.tasks if tasks is None else list(tasks)
            self._check(names)
            return {t: None for t in names}
        if len(row_tasks) != n:
            raise AdapterkitError(f"row_tasks has {len(row_tasks)} entries for {n} rows")
        rows: dict[str, list[int]] = {}
        for i, entry in enumerate(row_tasks):
            for t in ([entry] if isinstance(entry, str) else entry):
                rows.setdefault(t, []).append(i)
        self._check(list(rows))
        return {t: torch.tensor(r, dtype=torch.long) for t, r in rows.items()}

    def _check(self, names: list[str]) -> None:
        unknown = [t for t in names if t not in self.branches]
        if unknown:
            raise AdapterkitError(f"unknown task(s) {unknown}; the model serves {', '.join(self.tasks) or 'nothing'}")

    def extract(self, task: str) -> nn.Module:
        """The standalone Hugging Face model of one task (trunk layers under it + its branch)."""
        from transformers import AutoModelForSequenceClassification

        self._check([task])
        branch = self.branches[task]
        config = copy.deepcopy(self.config)
        config.num_labels = branch.head.classifier.out_features
        below = list(self.layers[:branch.branch_layer])
        upper = list(self.layers[branch.branch_layer:]) if branch.kind == "adapter" else list(branch.layers)
        config.num_hidden_layers = len(below) + len(upper)
        model = AutoModelForSequenceClassification.from_config(config)
        embeddings, layers, head = bert_parts(model)
        embeddings.load_state_dict(self.embeddings.state_dict())
        for target, source in zip(layers, below + upper):
            target.load_state_dict(source.state_dict())
        head.load_state_dict(branch.head.state_dict())
        if branch.kind == "adapter":
            self._copy_adapter_out(task, model, branch)
        return model.eval()

    def _copy_adapter_out(self, task: str, model: nn.Module, branch: Branch) -> None:
        from adapterkit.config import BottleneckConfig
        from adapterkit.model import adapter_plan, add_adapter, get_bank

        config = BottleneckConfig.from_dict({**branch.info["adapter"], "targets": None})
        plan = add_adapter(model, task, config)
        ours = {(s.layer, s.kind): gid for gid, sites in adapter_plan(self, task).groups.items() for s in sites}
        for gid, sites in plan.groups.items():
            source = get_bank(self).adapters[task][ours[(sites[0].layer, sites[0].kind)]]
            get_bank(model).adapters[task][gid].load_state_dict(source.state_dict())

    def overhead(self) -> dict:
        """Transformer layers needed to serve every task, vs separate full models."""
        per_task = {t: (self.full_depth - b.branch_layer if b.kind == "adapter" else b.num_layers)
                    for t, b in self.branches.items()}
        trunk = max([b.branch_layer for b in self.branches.values()], default=0)
        total = trunk + sum(per_task.values())
        separate = self.full_depth * len(per_task)
        return {"trunk": trunk, "per_task": per_task, "total": total, "separate": separate,
                "fraction": total / separate if separate else 0.0,
                "shape": {t: (b.branch_layer, per_task[t]) for t, b in self.branches.items()}}


def clone(module: nn.Module) -> nn.Module:
    """A copy of `module`'s weights and structure without adapterkit's site hooks (adapters are
    routed through hooks on the source model; a copy must not carry them along)."""
    from adapterkit.model import AdapterBank, detached_hooks

    if any(isinstance(m, AdapterBank) for m in module.modules()):
        raise AdapterkitError(f"cannot clone a {type(module).__name__} that holds adapters; clone its parts")
    with detached_hooks(module):
        return copy.deepcopy(module)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)

