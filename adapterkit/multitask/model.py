"""The flexible multi-task model: one frozen trunk run once per input, one branch per task.

Wei, Qi, He. "A Flexible Multi-Task Model for BERT Serving." ACL 2022 (short).
https://aclanthology.org/2022.acl-short.89/ (arXiv https://arxiv.org/abs/2107.05377).

Every task model that can be merged shares the pre-trained embeddings and bottom layers
unchanged. A task's branch starts at its branching layer b (the number of shared layers under it):
  kind "layers":  its own l transformer layers (a partially fine-tuned teacher's top layers, or a
                  student distilled into few layers) and its head;
  kind "adapter": per-task adapters in the *shared* pre-trained layers b..N-1 plus its head: no
                  extra layer weights, but layers b..N-1 run once per adapter task.
`forward` runs the embeddings and trunk layers once, up to the highest branching layer the
requested tasks need, then each requested task's branch on the rows that asked for it
(`row_tasks`: a per-example choice inside one batch). `add_model` takes a standalone Hugging
Face sequence classifier of any single-stack family adapterkit.sharing.sites knows, checks that its
bottom b layers (and everything before them) are bit-identical to the trunk and copies its upper
part in; `remove` drops a task; neither touches another task's weights. `extract(task)` rebuilds
the standalone model.

The pieces run through adapterkit.slicing: `runner` is the family's model with an empty layer
list (its embeddings are the trunk's), and a head is the family's modules after the last layer
(BERT: pooler, dropout, classifier; LLaMA: final norm, score), kept per task and swapped in for
the call. Saved by adapterkit.multitask.io; never pickled.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from adapterkit.errors import AdapterkitError
from adapterkit.slicing import StackSlicer
from adapterkit.toolkit.features import adapters_off, using_adapters

FORMAT, FORMAT_VERSION = "adapterkit.multitask", 2
MANIFEST, TRUNK_FILE = "multitask.json", "trunk.safetensors"
KINDS = ("layers", "adapter")


class Head(nn.Module):
    """A task's head: the family's modules that run after the last layer, by their paths in the model."""

    def __init__(self, parts: dict[str, nn.Module]) -> None:
        super().__init__()
        self.paths = list(parts)
        self.parts = nn.ModuleList(parts.values())

    def by_path(self) -> dict[str, nn.Module]:
        return dict(zip(self.paths, self.parts))

    def state_by_path(self) -> dict[str, torch.Tensor]:
        return {f"{p}.{k}": v for p, m in self.by_path().items() for k, v in m.state_dict().items()}

    def load_by_path(self, tensors: dict[str, torch.Tensor]) -> None:
        for path, module in self.by_path().items():
            module.load_state_dict({k[len(path) + 1:]: v for k, v in tensors.items() if k.startswith(path + ".")})


def task_parts(model: nn.Module) -> tuple[StackSlicer, nn.ModuleList, Head]:
    """(slicer, layers, head) of a sequence classifier; the head holds the model's own modules."""
    slicer = StackSlicer(model)
    return slicer, slicer.layers, Head({p: model.get_submodule(p) for p in slicer.head_paths()})


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

    def __init__(self, runner: nn.Module, stack: str, layers: nn.ModuleList, head_paths: list[str]) -> None:
        super().__init__()
        self.runner, self.stack, self.head_paths = runner, stack, list(head_paths)
        self.layers = layers
        self.branches = nn.ModuleDict()
        self.base_model_name: str | None = None  # the backbone tasks are trained from (for `add`)
        self.requires_grad_(False)
        object.__setattr__(self, "slicer", StackSlicer(runner, stack))

    @property
    def config(self):
        return self.runner.config

    @classmethod
    def from_backbone(cls, model: nn.Module, depth: int = 0) -> "MultiTaskModel":
        """An empty multi-task model on `model`'s embeddings and bottom `depth` layers (copies)."""
        slicer, layers, _ = task_parts(model)
        merged = cls(runner_of(model, slicer), slicer.stack, nn.ModuleList(clone(x) for x in layers[:depth]),
                     slicer.head_paths())
        merged.slicer.layer_output_len(layers[0])
        return merged.eval()

    @property
    def tasks(self) -> list[str]:
        return list(self.branches)

    @property
    def full_depth(self) -> int:
        return _depth(self.config)

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
        _, layers, head = task_parts(model)
        adapters = list_adapters(model)
        if not 0 <= branch_layer <= len(layers) - (1 if adapters else 0):
            raise AdapterkitError(f"branch layer {branch_layer} out of range for a {len(layers)}-layer model")
        self._grow_trunk(model, layers, len(layers) if adapters else branch_layer)
        if adapters:
            branch = self._adapter_branch(task, model, branch_layer, head, info)
        else:
            branch = Branch("layers", branch_layer, nn.ModuleList(clone(x) for x in layers[branch_layer:]),
                            clone(head), info)
        self.branches[task] = branch.requires_grad_(False).eval()
        return branch

    def add_branch(self, task: str, branch: Branch, source: nn.Module) -> Branch:
        """Add a ready branch of kind "layers"; `source` (the pre-trained backbone the branch was
        trained on) supplies trunk layers the model does not hold yet, after the equality check."""
        self._check_new(task)
        if branch.kind != "layers":
            raise AdapterkitError("add_branch takes 'layers' branches; merge adapter models with add_model")
        self._grow_trunk(source, task_parts(source)[1], branch.branch_layer)
        self.branches[task] = branch.requires_grad_(False).eval()
        return branch

    def _check_new(self, task: str) -> None:
        if task in self.branches:
            raise AdapterkitError(f"the multi-task model already has a task {task!r}; remove it first")
        if not task.isidentifier():
            raise AdapterkitError(f"task name must be a Python identifier, got {task!r}")

    def _grow_trunk(self, model: nn.Module, layers: nn.ModuleList, shared: int) -> None:
        """Check the model's pre-layer part and bottom `shared` layers equal the trunk; extend the trunk."""
        if type(model.config) is not type(self.config) or _width(model) != _width(self.runner) or \
                len(layers) > self.full_depth:
            raise AdapterkitError("the task model does not fit this multi-task model's backbone")
        overlap = min(shared, len(self.layers))
        if not _same_tensors(pre_state(self.runner, self.stack, self.head_paths), pre_state(model, self.stack, self.head_paths)):
            raise AdapterkitError("the task model's embeddings differ from the shared trunk's: its bottom layers "
                                  "must be the frozen pre-trained ones (not fine-tuned)")
        for i in range(overlap):
            if not _same_tensors(self.layers[i].state_dict(), layers[i].state_dict()):
                raise AdapterkitError(f"the task model's layer {i} differ from the shared trunk's: its bottom "
                                      f"layers must be the frozen pre-trained ones (not fine-tuned)")
        for i in range(len(self.layers), shared):
            self.layers.append(clone(layers[i]).requires_grad_(False).eval())

    def _adapter_branch(self, task: str, model: nn.Module, branch_layer: int, head: Head, info) -> Branch:
        from adapterkit.model import adapter_config, adapter_plan, add_adapter, list_adapters

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
        add_adapter(self, task, sub, activate=False)
        copy_adapter(model, names[0], self, task)
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
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        states = self.slicer.embed(input_ids, mask, token_type_ids)  # (B, T, H)
        at, done = {0: states}, 0
        with adapters_off(self):
            for b in sorted({self.branches[t].branch_layer for t in requested} - {0}):
                states = self.slicer.run(states, mask, done, b, layers=self.layers)
                at[b], done = states, b
        out = MultiTaskOutput()
        for task, rows in requested.items():
            branch = self.branches[task]
            x, m = at[branch.branch_layer], mask
            if rows is not None:
                x, m = x[rows], m[rows]
            out.logits[task], out.rows[task] = self._run_branch(task, branch, x, m), rows
        return out

    def _run_branch(self, task: str, branch: Branch, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if branch.kind == "layers":
            x = self.slicer.run(x, mask, 0, branch.num_layers, layers=branch.layers)
        else:
            with using_adapters(self, [task]):
                x = self.slicer.run(x, mask, branch.branch_layer, len(self.layers), layers=self.layers)
        return self.slicer.head(x, mask, parts=branch.head.by_path())

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
        self._check([task])
        branch = self.branches[task]
        below = list(self.layers[:branch.branch_layer])
        upper = list(self.layers[branch.branch_layer:]) if branch.kind == "adapter" else list(branch.layers)
        model = copy.deepcopy(self.runner)  # no adapters or hooks: those sit on the trunk layers
        _set_path(model, self.stack, renumbered(nn.ModuleList(clone(x) for x in below + upper)))
        for path, module in branch.head.by_path().items():
            _set_path(model, path, clone(module))
        config = model.config
        config.num_hidden_layers = len(below) + len(upper)
        config.num_labels = _num_labels(branch.head)
        if branch.kind == "adapter":
            self._copy_adapter_out(task, model, branch)
        return model.eval()

    def _copy_adapter_out(self, task: str, model: nn.Module, branch: Branch) -> None:
        from adapterkit.config import BottleneckConfig
        from adapterkit.model import add_adapter

        add_adapter(model, task, BottleneckConfig.from_dict({**branch.info["adapter"], "targets": None}))
        copy_adapter(self, task, model, task)

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


def renumbered(layers: nn.ModuleList) -> nn.ModuleList:
    """Set each layer's `layer_idx` (where the family keeps one, for its key-value cache) to its position."""
    for i, layer in enumerate(layers):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = i
    return layers


def runner_of(model: nn.Module, slicer: StackSlicer) -> nn.Module:
    """A copy of `model` without its layers and adapters: the embeddings (and whatever else runs
    before the first layer) of the trunk, and a head the branches' heads stand in for."""
    from adapterkit.model import BANK

    bank = getattr(model, BANK, None)
    with slicer._swapped(nn.ModuleList()):
        runner = copy.deepcopy(model, {id(bank): None} if bank is not None else {})
    if BANK in runner._modules:
        del runner._modules[BANK]
    return runner.requires_grad_(False).eval()


def pre_state(model: nn.Module, stack: str, head_paths: list[str]) -> dict[str, torch.Tensor]:
    """The tensors of everything outside the layer list, the head and the adapters (the embeddings)."""
    from adapterkit.model import BANK

    skip = (f"{stack}.", f"{BANK}.", *(f"{p}." for p in head_paths))
    return {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}


def copy_adapter(src: nn.Module, src_name: str, dst: nn.Module, dst_name: str) -> None:
    """Load adapter `src_name`'s module weights into `dst_name`, matched by (layer, site kind)."""
    from adapterkit.model import adapter_plan, get_bank

    theirs = {(s.layer, s.kind): gid for gid, sites in adapter_plan(src, src_name).groups.items() for s in sites}
    source = get_bank(src).adapters[src_name]
    for gid, sites in adapter_plan(dst, dst_name).groups.items():
        get_bank(dst).adapters[dst_name][gid].load_state_dict(source[theirs[(sites[0].layer, sites[0].kind)]].state_dict())
    get_bank(dst).adapters[dst_name].requires_grad_(False)


def clone(module: nn.Module) -> nn.Module:
    """A copy of `module`'s weights and structure without adapterkit's site hooks (adapters are
    routed through hooks on the source model; a copy must not carry them along)."""
    from adapterkit.model import AdapterBank, detached_hooks

    if any(isinstance(m, AdapterBank) for m in module.modules()):
        raise AdapterkitError(f"cannot clone a {type(module).__name__} that holds adapters; clone its parts")
    with detached_hooks(module):
        return copy.deepcopy(module)


def _set_path(model: nn.Module, path: str, module: nn.Module) -> None:
    holder, _, attr = path.rpartition(".")
    setattr(model.get_submodule(holder) if holder else model, attr, module)


def _num_labels(head: Head) -> int:
    last = [m for m in head.parts.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else 1


def _depth(config) -> int:
    from adapterkit.slicing import _config_depth

    return _config_depth(config)


def _width(model: nn.Module) -> int | None:
    from adapterkit.sharing.sites import hidden_size

    return hidden_size(model)


def _same_tensors(sa: dict, sb: dict) -> bool:
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)
