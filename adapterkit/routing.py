"""Per-row adapter routing: one forward pass over a batch whose rows use different adapters.

    with ak.route(model, ["cola", None, "sst2", ("shared", "cola")]):
        logits = model(**inputs).logits      # row 0 through cola, row 1 the bare backbone, ...
    per_row = ak.forward_rows(model, inputs, names, heads={"cola": cola_head, "sst2": sst2_head})

Each row names one adapter, a stack of adapters (a tuple, applied in order), or None (the bare
backbone). At every site the bank's hook hands the output to the active `RowRouter`, which
applies each row's modules for that site; a row whose adapter has no module at the site (other
layer set, placement or sharing plan), or drops it (AdapterDrop: the site's layer is below the
model's k or the adapter's own `bank.row_drop[name]`), passes through unchanged.

Formulation (measured in benchmarks/bench_serve_engine.py, see benchmarks/README.md): the
bottleneck modules of the rows are *gathered* into per-row weight stacks, padded to the largest
bottleneck in the batch, and applied with two batched GEMMs per site (`torch.baddbmm`, the
bottleneck counterpart of Punica's SGMV): (B, T, d) x (B, d, m) -> (B, T, m) -> (B, T, d). A
padded unit has zero weights and bias, so it adds exactly zero; a row without a module at a site
gets all-zero weights and its output is h + 0 = h. The stacks are built once per batch for each
distinct tuple of per-row modules (with 3-shared adapters the 12 sites of MiniLM need 2). The
alternative, `formulation="group"` (index_select the rows of each adapter, run its module,
index_copy back: a Python loop over the adapters in the batch), is kept for adapter kinds other
than the bottleneck and for the benchmark; it was slower at K >= 4 adapters per batch.

Per-row heads: `forward_rows(..., heads=...)` runs the backbone once (with routing) and each
distinct head on its own rows, so rows may have heads with different label counts and task
types; `build_head(model, tensors)` makes a head module from an adapter's saved head tensors.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterable, Mapping, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from adapterkit.errors import AdapterkitError
from adapterkit.modules.bottleneck import _ACTIVATIONS, BottleneckAdapter
from adapterkit.sharing.sites import backbone_modules

RowAdapters = Union[str, Sequence[str], None]  # one adapter, a stack, or None (bare backbone)
FORMULATIONS = ("gather", "group")


class RowRouter:
    """The per-row adapter chains of one batch, applied at each site by the bank's hook."""

    def __init__(self, bank, adapter_names: Iterable[RowAdapters], formulation: str = "gather") -> None:
        if formulation not in FORMULATIONS:
            raise AdapterkitError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
        self.rows = [_as_stack(names) for names in adapter_names]
        for name in {n for stack in self.rows for n in stack}:
            if name not in bank.adapters:
                known = ", ".join(list(bank.adapters)[:10]) or "none"
                raise AdapterkitError(f"no adapter named {name!r} (adapters on this model: {known})")
        self.formulation = formulation
        self._modules = bank.adapters
        self._routes = {name: bank.plans[name].group_of() for name in {n for s in self.rows for n in s}}
        # AdapterDrop: a row's adapter skips the sites below its own k (bank.row_drop) or the model's
        self._below = {name: max(bank.drop_layers, bank.row_drop.get(name, 0)) for name in self._routes}
        self._site_layers = bank.site_layers
        self._sites: dict[str, list[list[nn.Module | None]]] = {}  # path -> per depth, per row
        self._stacks: dict[tuple[int, ...], _Gathered] = {}  # distinct per-row module tuples

    def apply(self, path: str, output):
        h = output[0] if isinstance(output, tuple) else output
        if h.shape[0] != len(self.rows):
            raise AdapterkitError(f"batch has {h.shape[0]} rows but {len(self.rows)} adapter names were routed")
        for modules in self._site(path):
            h = self._apply_depth(modules, h)
        return (h, *output[1:]) if isinstance(output, tuple) else h

    def _site(self, path: str) -> list[list[nn.Module | None]]:
        """Per stack depth, the module of each row at this site (None: the row passes through)."""
        if path not in self._sites:
            layer = self._site_layers.get(path, 0)
            chains = [[self._modules[n][self._routes[n][path]] for n in stack
                       if path in self._routes[n] and layer >= self._below[n]] for stack in self.rows]
            depth = max((len(c) for c in chains), default=0)
            self._sites[path] = [[c[i] if i < len(c) else None for c in chains] for i in range(depth)]
        return self._sites[path]

    def _apply_depth(self, modules: list[nn.Module | None], h: torch.Tensor) -> torch.Tensor:
        gatherable = all(m is None or (type(m) is BottleneckAdapter and (m.dropout is None or not m.training)) for m in modules)
        if self.formulation == "group" or not gatherable or (h.dim() != 3):
            return _apply_grouped(modules, h)
        key = tuple(id(m) for m in modules)
        if key not in self._stacks:
            self._stacks[key] = _Gathered(modules, h.dtype, h.device)
        return self._stacks[key](h)


class _Gathered:
    """Per-row bottleneck weights stacked for two batched GEMMs (one pass per activation).

    The stacks hold views of the modules' own weights (copied once per batch by torch.stack, not
    per row: padding only where bottleneck sizes differ), and the per-row scaling multiplies the
    bottleneck activations z (B, T, m) instead of copying scaled weights. When every row of a pass
    uses one module (one adapter in the batch, or one adapter per shared site), the module runs
    as it does unrouted: no stacks at all."""

    def __init__(self, modules: list[BottleneckAdapter | None], dtype, device) -> None:
        present = [m for m in modules if m is not None]
        d = present[0].up.out_features
        m_max = max(m.down.out_features for m in present)
        self.passes = []
        for act in sorted({m.activation for m in present}):
            rows = [m if m is not None and m.activation == act else None for m in modules]
            if all(m is rows[0] for m in rows):
                self.passes.append(rows[0])  # the same module on every row
                continue
            uniq = list({id(m): m for m in rows if m is not None}.values())
            zero = torch.zeros(m_max, d, dtype=dtype, device=device)
            down = {id(m): _pad_rows(m.down.weight, m_max) for m in uniq}  # (m, d)
            up = {id(m): _pad_cols(m.up.weight, m_max) for m in uniq}  # (d, m)
            w_down_t = torch.stack([down[id(m)].t() if m is not None else zero.t() for m in rows])  # (B, d, m)
            w_up_t = torch.stack([up[id(m)].t() if m is not None else zero for m in rows])  # (B, m, d)
            b_down = torch.stack([_pad(m.down.bias, m_max) if m is not None else zero[:, 0] for m in rows])  # (B, m)
            b_up = torch.stack([m.scaling * m.up.bias if m is not None else zero[0] for m in rows])  # (B, d)
            scale = torch.tensor([m.scaling if m is not None else 0.0 for m in rows], dtype=dtype, device=device)
            self.passes.append((_ACTIVATIONS[act], w_down_t, b_down.unsqueeze(1), w_up_t, b_up.unsqueeze(1),
                                None if bool((scale == 1).all()) else scale.view(-1, 1, 1)))

    def __call__(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        for p in self.passes:
            if isinstance(p, nn.Module):
                h = p(h)
                continue
            act, w_down_t, b_down, w_up_t, b_up, scale = p
            z = act(torch.baddbmm(b_down, h, w_down_t))  # (B, T, m); padded units: act(0) = 0
            if scale is not None:
                z = z * scale  # s * (z @ W_up^T) = (s * z) @ W_up^T
            h = torch.baddbmm(h + b_up, z, w_up_t)  # (B, T, d): h + s * (z @ W_up^T + b_up)
        return h


def _apply_grouped(modules: list[nn.Module | None], h: torch.Tensor) -> torch.Tensor:
    """Rows of each distinct module gathered with index_select, run together, copied back."""
    out = h
    by_module: dict[int, tuple[nn.Module, list[int]]] = {}
    for row, m in enumerate(modules):
        if m is not None:
            by_module.setdefault(id(m), (m, []))[1].append(row)
    for module, rows in by_module.values():
        if out is h:
            out = h.clone()
        idx = torch.tensor(rows, device=h.device)
        out.index_copy_(0, idx, module(h.index_select(0, idx)))
    return out


def _pad(v: torch.Tensor, m: int) -> torch.Tensor:
    return F.pad(v, (0, m - v.shape[0])) if v.shape[0] < m else v


def _pad_rows(w: torch.Tensor, m: int) -> torch.Tensor:  # (m_i, d) -> (m, d)
    return F.pad(w, (0, 0, 0, m - w.shape[0])) if w.shape[0] < m else w


def _pad_cols(w: torch.Tensor, m: int) -> torch.Tensor:  # (d, m_i) -> (d, m)
    return F.pad(w, (0, m - w.shape[1])) if w.shape[1] < m else w


def _as_stack(names: RowAdapters) -> tuple[str, ...]:
    if names is None:
        return ()
    if isinstance(names, str):
        return (names,)
    return tuple(names)


@contextmanager
def route(model: nn.Module, adapter_names: Iterable[RowAdapters], formulation: str = "gather"):
    """Inside the block, the model's forward routes row i through adapter_names[i] (the active
    adapters are ignored). Not re-entrant: one routed forward per model at a time."""
    from adapterkit.model import get_bank

    bank = get_bank(model)
    if bank.router is not None:
        raise AdapterkitError("a routed forward is already running on this model")
    bank.router = RowRouter(bank, adapter_names, formulation)
    try:
        yield bank.router
    finally:
        bank.router = None


def forward_rows(model: nn.Module, inputs: Mapping[str, torch.Tensor], adapter_names: Sequence[RowAdapters],
                 heads: Mapping[str, nn.Module] | None = None, formulation: str = "gather"):
    """Logits of a batch whose rows use different adapters, in one backbone pass.

    Without `heads`, every row uses the model's own head and the result is its (B, C) logits.
    With `heads` (adapter name -> head module, see `build_head`), row i uses the head of the last
    adapter of its stack, and the result is a list of B 1-D logit tensors (their lengths may
    differ). A row with no adapter, or whose adapter has no entry in `heads`, raises."""
    if heads is None:
        with route(model, adapter_names, formulation):
            return model(**inputs).logits
    stacks = [_as_stack(n) for n in adapter_names]
    missing = sorted({s[-1] if s else "<bare backbone>" for s in stacks if not s or s[-1] not in heads})
    if missing:
        raise AdapterkitError(f"no head for {', '.join(missing)}")
    base = getattr(model, "base_model", model)
    with route(model, stacks, formulation):
        hidden = base(**inputs)[0]  # (B, T, H)
    out: list[torch.Tensor | None] = [None] * len(stacks)
    by_head: dict[str, list[int]] = {}
    for row, stack in enumerate(stacks):
        by_head.setdefault(stack[-1], []).append(row)
    for name, rows in by_head.items():
        logits = heads[name](hidden[rows])  # (n, C_name)
        for row, value in zip(rows, logits):
            out[row] = value
    return out


class _PoolerHead(nn.Module):
    """BERT-style: classifier(dropout(pooler(states)))."""

    def __init__(self, pooler: nn.Module, dropout: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.pooler, self.dropout, self.classifier = pooler, dropout, classifier

    def forward(self, states: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, C)
        return self.classifier(self.dropout(self.pooler(states)))


def head_template(model: nn.Module) -> tuple[nn.Module, dict[str, str]]:
    """The model's own head as a module on the last hidden states, and model path -> head path
    of its parts. BERT-style (pooler + classifier) and RoBERTa-style (a classifier module on the
    sequence output) heads are supported."""
    base = getattr(model, "base_model", None)
    classifier = getattr(model, "classifier", None)
    paths = {id(m): n for n, m in backbone_modules(model)}
    if base is not None and getattr(base, "pooler", None) is not None and isinstance(classifier, nn.Linear):
        dropout = getattr(model, "dropout", None) or nn.Identity()
        head = _PoolerHead(base.pooler, dropout, classifier)
        return head, {paths[id(base.pooler)]: "pooler", paths[id(classifier)]: "classifier"}
    if isinstance(classifier, nn.Module) and not isinstance(classifier, nn.Linear):
        return classifier, {paths[id(classifier)]: ""}
    raise AdapterkitError(f"per-row heads need a BERT-style (pooler + classifier) or RoBERTa-style classification "
                          f"head; {type(model).__name__} has neither")


def build_head(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> nn.Module:
    """A head module (last hidden states -> logits) with an adapter's saved head tensors (model-level
    names, e.g. "bert.pooler.dense.weight", "classifier.weight"); parts without tensors keep the
    model's weights, the label count follows the tensors."""
    template, prefixes = head_template(model)
    head = copy.deepcopy(template).eval().requires_grad_(False)
    for key, value in tensors.items():
        target = _head_path(key, prefixes)
        if target is None:
            raise AdapterkitError(f"head tensor {key} is not part of {type(model).__name__}'s classification head")
        owner_path, _, leaf = target.rpartition(".")
        owner = head.get_submodule(owner_path) if owner_path else head
        current = getattr(owner, leaf, None)
        if not isinstance(current, torch.Tensor) or current.dim() != value.dim():
            raise AdapterkitError(f"head tensor {key} has shape {tuple(value.shape)}, which the head cannot take")
        setattr(owner, leaf, nn.Parameter(value.to(current.dtype), requires_grad=False))
        if isinstance(owner, nn.Linear) and leaf == "weight":
            owner.out_features, owner.in_features = value.shape
    return head


def head_size(head: nn.Module) -> int:
    """Number of outputs (labels) of a head built by build_head."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features


def _head_path(key: str, prefixes: dict[str, str]) -> str | None:
    for model_path, head_path in prefixes.items():
        if key.startswith(model_path + "."):
            rest = key[len(model_path) + 1:]
            return f"{head_path}.{rest}" if head_path else rest
    return None
