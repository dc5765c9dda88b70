"""Find where adapters go in any Hugging Face model, from its module structure.

A *site* is a module whose output is a hidden-sized tensor just before a residual add:
  - "attn": the self-attention output projection (BERT `attention.output.dense`,
    LLaMA `self_attn.o_proj`, GPT-2 `attn.c_proj`, T5 `SelfAttention.o`, ...);
  - "ffn": the feed-forward output projection (BERT `output.dense`, LLaMA `mlp.down_proj`,
    GPT-2 `mlp.c_proj`, T5 `DenseReluDense.wo`, ...).
The adapter is applied to that output, so it sits before the residual add and, for post-LN
models, before the LayerNorm (Houlsby placement).

Discovery is generic:
  1. layer stacks are `nn.ModuleList`s of identical blocks that contain an attention module
     (a child named like *attn* / *attention*); stacks nested in a found stack are skipped;
  2. inside a layer, the attention site is the last linear under the (self-)attention module
     with output width = hidden; the feed-forward site is the last linear outside attention
     that maps another width back to hidden (if there is none, as in fused mixture-of-experts
     blocks, the module named like mlp/ffn/feed_forward/moe is used as a whole).
Cross-attention (decoder layers of encoder-decoders, e.g. T5 `EncDecAttention`, BART
`encoder_attn`) gets no adapter: adapters go after the self-attention and feed-forward blocks.

Models that name things so that this fails can pass `targets` (regular expressions on module
names, see `BottleneckConfig.targets`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from adapterkit.errors import PlacementError

BANK = "adapterkit"  # the attribute under which adapterkit.model keeps a model's AdapterBank

_ATTN = re.compile(r"attn|attention", re.IGNORECASE)
_CROSS = re.compile(r"cross|encdec|enc_dec|encoder_attn", re.IGNORECASE)
_FFN_CONTAINER = re.compile(r"^(mlp|ffn|feed_forward|feedforward|block_sparse_moe|moe)$", re.IGNORECASE)

@dataclass(frozen=True)
class Site:
    path: str  # module whose output is adapted
    stack: int  # which layer stack (0: encoder or the only stack, 1: decoder)
    layer: int  # index of the layer within its stack
    kind: str  # "attn" or "ffn"
    hidden: int  # width of the adapted output
    layer_path: str  # module path of the layer that holds the site

    @property
    def label(self) -> str:
        return f"{self.layer}.{self.kind}" if self.stack == 0 else f"s{self.stack}.{self.layer}.{self.kind}"


@dataclass(frozen=True)
class LayerStack:
    path: str
    layers: tuple[str, ...]


def backbone_modules(model: nn.Module):
    """model.named_modules() without the adapter bank's subtree. Adapters are never sites, and
    walking a bank of 1,000 resident adapters made every add/load cost O(resident adapters)."""
    bank = getattr(model, "_modules", {}).get(BANK)
    return model.named_modules(memo={bank} if bank is not None else None)


def backbone_parameters(model: nn.Module):
    """model.named_parameters() without the adapter bank's (same names and order)."""
    seen: set[int] = set()
    for prefix, module in backbone_modules(model):
        for name, p in module._parameters.items():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                yield (f"{prefix}.{name}" if prefix else name), p


def find_sites(model: nn.Module, targets: dict[str, str] | None = None) -> list[Site]:
    """Every attn and ffn site of every layer, in stack and layer order."""
    targets = targets or {}
    hidden = hidden_size(model)
    stacks = find_layer_stacks(model, targets.get("layers"))
    modules = dict(backbone_modules(model))
    sites: list[Site] = []
    for s, stack in enumerate(stacks):
        for i, layer_path in enumerate(stack.layers):
            found = _layer_sites(modules[layer_path], hidden, targets)
            for kind, rel in found.items():
                width = _out_features(modules[f"{layer_path}.{rel}"]) or hidden
                sites.append(Site(f"{layer_path}.{rel}", s, i, kind, width, layer_path))
    return sites


def find_layer_stacks(model: nn.Module, layers_pattern: str | None = None) -> list[LayerStack]:
    if layers_pattern:
        return _stacks_from_pattern(model, layers_pattern)
    stacks: list[LayerStack] = []
    for name, module in backbone_modules(model):
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if any(name.startswith(s.path + ".") for s in stacks):
            continue  # nested inside a stack already found (e.g. T5's block.layer)
        kinds = {type(child) for child in module}
        if len(kinds) == 1 and _has_attention(module[0]):
            stacks.append(LayerStack(name, tuple(f"{name}.{i}" for i in range(len(module)))))
    if not stacks:
        cls = type(model).__name__
        raise PlacementError(
            f"no transformer layers found in {cls}: adapterkit looks for an nn.ModuleList of identical "
            f"blocks containing an attention module. Pass targets={{'layers': r'<regex for layer modules>', "
            f"'attn': r'<regex for the attention output projection>', 'ffn': r'<regex for the feed-forward "
            f"output projection>'}} in BottleneckConfig (regexes on module names from model.named_modules())"
        )
    return stacks


def hidden_size(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    for attr in ("hidden_size", "d_model", "n_embd", "dim", "embed_dim"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    return None


def _stacks_from_pattern(model: nn.Module, pattern: str) -> list[LayerStack]:
    regex = re.compile(pattern)
    by_parent: dict[str, list[str]] = {}
    for name, _ in backbone_modules(model):
        if name and regex.fullmatch(name):
            by_parent.setdefault(name.rpartition(".")[0], []).append(name)
    if not by_parent:
        raise PlacementError(f"targets['layers']={pattern!r} matches no module of {type(model).__name__}")
    return [LayerStack(parent, tuple(names)) for parent, names in by_parent.items()]


def _has_attention(block: nn.Module) -> bool:
    return any(_ATTN.search(name.rsplit(".", 1)[-1]) for name, _ in block.named_modules() if name)


def _layer_sites(layer: nn.Module, hidden: int | None, targets: dict[str, str]) -> dict[str, str]:
    named = [(n, m) for n, m in layer.named_modules() if n]
    attn_roots = _topmost([n for n, m in named if _ATTN.search(n.rsplit(".", 1)[-1]) and _has_linear(m)])
    self_roots = [r for r in attn_roots if not _CROSS.search(r)]
    sites: dict[str, str] = {}
    attn = _by_pattern(named, targets.get("attn")) or _attn_output(named, self_roots, hidden)
    if attn:
        sites["attn"] = attn
    ffn = _by_pattern(named, targets.get("ffn")) or _ffn_output(named, attn_roots, hidden)
    if ffn:
        sites["ffn"] = ffn
    return sites


def _by_pattern(named, pattern: str | None) -> str | None:
    if not pattern:
        return None
    regex = re.compile(pattern)
    hits = [n for n, _ in named if regex.search(n)]
    return hits[-1] if hits else None


def _attn_output(named, self_roots: list[str], hidden: int | None) -> str | None:
    if not self_roots:
        return None
    root = self_roots[0]
    candidates = [n for n, m in named if _under(n, root) and _out_features(m) is not None]
    if hidden is not None:
        candidates = [n for n in candidates if _out_features(dict(named)[n]) == hidden]
    return candidates[-1] if candidates else None


def _ffn_output(named, attn_roots: list[str], hidden: int | None) -> str | None:
    outside = [(n, m) for n, m in named if not any(_under(n, r) or n == r for r in attn_roots)]
    linears = [(n, m) for n, m in outside if _out_features(m) is not None]
    if hidden is not None:
        down = [n for n, m in linears if _out_features(m) == hidden and _in_features(m) != hidden]
        if down:
            return down[-1]
    containers = [n for n, _ in outside if _FFN_CONTAINER.match(n.rsplit(".", 1)[-1])]
    return containers[-1] if containers else None


def _has_linear(module: nn.Module) -> bool:
    return any(_out_features(m) is not None for m in module.modules())


def _topmost(names: list[str]) -> list[str]:
    return [n for n in names if not any(_under(n, other) for other in names if other != n)]


def _under(name: str, root: str) -> bool:
    return name.startswith(root + ".")


def _out_features(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.out_features
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # GPT-2 style (in, out) weight
        return module.nf
    return None


def _in_features(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.in_features
    if type(module).__name__ == "Conv1D":
        return module.weight.shape[0]
    return None
