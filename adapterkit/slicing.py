"""Run a model's layer stack in pieces: the embeddings, layers i..j, the head.

    slicer = StackSlicer(model)                    # a task model (e.g. *ForSequenceClassification)
    h = slicer.embed(input_ids, attention_mask)    # (B, T, H): the states entering layer 0
    h = slicer.run(h, attention_mask, 0, 4)        # through layers 0..3 (the states entering layer 4)
    h = slicer.run(h, attention_mask, 4, slicer.num_layers)
    logits = slicer.head(h, attention_mask)        # final norm (decoders), pooling, classifier

The pieces compose to the model's own forward (tested for every single-stack family that
adapterkit.sharing.sites places adapters in). Every piece runs the model's *own* forward, so each
family keeps its attention mask (bidirectional, causal, sliding-window), its position handling
(absolute, relative, rotary, ALiBi) and its pooling (the [CLS] pooler, the last real token);
only the layer list is cut: for the duration of one call the stack's `nn.ModuleList` holds the
slice, a forward pre-hook on the slice's first layer swaps its hidden-states input for the given
states, and a forward hook on its last layer captures the output. `head` runs the forward with
an empty-compute stand-in as the only layer. Adapters (site hooks inside the layers) run as usual.

Stages of the forward that come before the first layer (embeddings, ELECTRA's projection,
Gemma's scaling, GPT-2's position embeddings) belong to `embed`; those after the last layer
(a decoder's final norm, BERT's pooler) to `head`. States are (B, T, H) tensors and the
attention mask the (B, T) 0/1 mask of real tokens, as the model's forward takes it.
Not thread-safe (the layer list is swapped during a call). Models with several stacks
(encoder-decoders) or layers reused across depth (ALBERT) are refused.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from adapterkit.errors import AdapterkitError


class StackSlicer:
    """Embeddings, layer slices and head of one single-stack model (see the module docstring)."""

    def __init__(self, model: nn.Module, stack: str | None = None) -> None:
        """`stack`: the path of the layer list (found with adapterkit.sharing.sites when not given; give it
        for a model whose list is empty and only ever holds other layers, see `run(layers=...)`)."""
        from adapterkit.sharing.sites import find_layer_stacks, hidden_size

        if stack is None:
            stacks = find_layer_stacks(model)
            if len(stacks) != 1:
                raise AdapterkitError(f"layer slicing needs a single layer stack; {type(model).__name__} has {len(stacks)}")
            stack = stacks[0].path
        holder, _, attr = stack.rpartition(".")
        self.model, self.base, self.stack = model, getattr(model, "base_model", model), stack
        self._holder, self._attr = model.get_submodule(holder) if holder else model, attr
        self.layers: nn.ModuleList = getattr(self._holder, attr)
        depth = _config_depth(model.config)
        if len(self.layers) and depth is not None and depth != len(self.layers):
            raise AdapterkitError(f"{type(model).__name__} reuses its {len(self.layers)} layer(s) across {depth} "
                                  f"steps; layer slicing needs one module per layer")
        self.hidden = hidden_size(model)
        self._head_paths: list[str] | None = None
        self._out_len: int | None = None  # a layer's output: 0 = a tensor, n = an n-tuple (learnt on a first run)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    # --- the three pieces -------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The states entering layer 0, (B, T, H)."""
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        probe = _Capture()
        try:
            self._base_forward(input_ids, mask, [probe], **extra)
        except _Stop:
            pass  # the forward ends where the first layer would start
        return probe.states

    def run(self, states: torch.Tensor, attention_mask: torch.Tensor | None, start: int, end: int,
            layers: nn.ModuleList | None = None) -> torch.Tensor:
        """Layers start..end-1 on `states` (the states entering layer `start`); (B, T, H).
        `layers`: run these layers of the family (e.g. a task's own copies) instead of the model's."""
        layers = self.layers if layers is None else layers
        if not 0 <= start <= end <= len(layers):
            raise AdapterkitError(f"layer slice {start}:{end} out of range for {len(layers)} layers")
        if start == end:
            return states
        mask = _mask(states, attention_mask)
        part = layers[start:end]
        with self._feed(part[0], states), self._capture_output(part[-1]) as box:
            self._base_forward(self._ids(mask), mask, part)
        return box["states"]

    def last_hidden(self, states: torch.Tensor, attention_mask: torch.Tensor | None, start: int) -> torch.Tensor:
        """The base model's `last_hidden_state` (B, T, H) from the states entering layer `start`:
        layers start.. and what follows the stack in the base model (a decoder's final norm)."""
        if not 0 <= start <= len(self.layers):
            raise AdapterkitError(f"layer {start} out of range for {len(self.layers)} layers")
        mask = _mask(states, attention_mask)
        if start == len(self.layers):
            return self._base_forward(self._ids(mask), mask, [_Emit(states, self.layer_output_len())]).last_hidden_state
        part = self.layers[start:]
        with self._feed(part[0], states):
            return self._base_forward(self._ids(mask), mask, part).last_hidden_state

    def head(self, states: torch.Tensor, attention_mask: torch.Tensor | None = None,
             parts: dict[str, nn.Module] | None = None) -> torch.Tensor:
        """The task head on the states leaving the last layer: logits (B, C). `parts` (path ->
        module, see `head_paths`) stand in for the model's own head modules during the call."""
        mask = _mask(states, attention_mask)
        emit = _Emit(states, self.layer_output_len())
        with self._swapped(nn.ModuleList([emit])), _modules_swapped(self.model, parts or {}):
            out = self.model(input_ids=self._ids(mask), attention_mask=mask, **_no_cache(self.model.config))
        return out.logits

    def head_paths(self) -> list[str]:
        """Paths of the modules that run after the last layer (final norm, pooler, classifier...):
        the topmost ones, in call order. What a task's head is, for any family."""
        if self._head_paths is None:
            mask = torch.ones(1, 2, dtype=torch.long)
            emit = _Emit(torch.zeros(1, 2, self.hidden or 1), self.layer_output_len())
            called: list[str] = []
            hooked = [(name, m) for name, m in self.model.named_modules() if name and not _within(name, self.stack)]
            handles = [m.register_forward_pre_hook(lambda mod, args, name=name: called.append(name)) for name, m in hooked]
            handles.append(emit.register_forward_pre_hook(lambda mod, args: called.append("")))
            try:
                with torch.no_grad(), self._swapped(nn.ModuleList([emit])):
                    self.model(input_ids=self._ids(mask), attention_mask=mask, **_no_cache(self.model.config))
            finally:
                for h in handles:
                    h.remove()
            after = called[called.index("") + 1:]
            self._head_paths = [n for n in dict.fromkeys(after) if not any(_within(n, o) for o in after if o != n)]
        return list(self._head_paths)

    def layer_output_len(self, layer: nn.Module | None = None) -> int:
        """How the family's layers return: 0 = a tensor, n = an n-tuple (learnt once, from `layer`
        or the model's first layer, on a two-token input)."""
        if self._out_len is None:
            layer = layer if layer is not None else (self.layers[0] if len(self.layers) else None)
            if layer is None:
                raise AdapterkitError("no layer to learn the family's layer output from")
            mask = torch.ones(1, 2, dtype=torch.long)
            with torch.no_grad(), self._capture_output(layer):
                self._base_forward(self._ids(mask), mask, [layer])
        return self._out_len

    # --- mechanics --------------------------------------------------------------------------------
    def _base_forward(self, input_ids, mask, layers, **extra):
        with self._swapped(nn.ModuleList(list(layers))):
            return self.base(input_ids=input_ids, attention_mask=mask, **_no_cache(self.model.config), **extra)

    @contextmanager
    def _swapped(self, layers: nn.ModuleList) -> Iterator[None]:
        original = getattr(self._holder, self._attr)
        setattr(self._holder, self._attr, layers)
        try:
            yield
        finally:
            setattr(self._holder, self._attr, original)

    @contextmanager
    def _feed(self, layer: nn.Module, states: torch.Tensor) -> Iterator[None]:
        def pre(module, args, kwargs):
            if args:
                return (states, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": states}

        handle = layer.register_forward_pre_hook(pre, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    @contextmanager
    def _capture_output(self, layer: nn.Module) -> Iterator[dict]:
        box: dict = {}

        def post(module, args, output):
            self._out_len = len(output) if isinstance(output, tuple) else 0
            box["states"] = output[0] if isinstance(output, tuple) else output

        handle = layer.register_forward_hook(post)
        try:
            yield box
        finally:
            handle.remove()

    def _ids(self, mask: torch.Tensor) -> torch.Tensor:
        """Token ids that only mark padding (the layers never see them: their input is replaced)."""
        pad = getattr(self.model.config, "pad_token_id", None)
        pad = 0 if pad is None else pad
        real = 1 if pad != 1 else 2
        return torch.where(mask.bool(), torch.full_like(mask, real), torch.full_like(mask, pad)).long()


class _Emit(nn.Module):
    """The head's only "layer": returns the given states in the family's layer-output form."""

    def __init__(self, states: torch.Tensor, out_len: int) -> None:
        super().__init__()
        self.states, self.out_len = states, out_len

    def forward(self, *args, **kwargs):  # (states, None, ...) where the family's layers return a tuple
        return (self.states, *[None] * (self.out_len - 1)) if self.out_len else self.states


class _Stop(Exception):
    """Ends a forward once the states entering layer 0 are known."""


class _Capture(nn.Module):
    """`embed`'s only "layer": records its hidden-states input and ends the forward."""

    def forward(self, *args, **kwargs):
        self.states = args[0] if args else kwargs["hidden_states"]
        raise _Stop


@contextmanager
def _modules_swapped(model: nn.Module, parts: dict[str, nn.Module]) -> Iterator[None]:
    originals = {path: model.get_submodule(path) for path in parts}
    for path, module in parts.items():
        _set(model, path, module)
    try:
        yield
    finally:
        for path, module in originals.items():
            _set(model, path, module)


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    holder, _, attr = path.rpartition(".")
    setattr(model.get_submodule(holder) if holder else model, attr, module)


def _within(name: str, root: str) -> bool:
    return name == root or name.startswith(root + ".")


def _mask(states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is not None:
        return attention_mask
    return torch.ones(states.shape[:2], dtype=torch.long, device=states.device)


def _no_cache(config) -> dict:
    return {"use_cache": False} if getattr(config, "use_cache", None) is not None else {}


def _config_depth(config) -> int | None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("num_hidden_layers", "n_layers", "n_layer", "num_layers"):
        value = getattr(text, key, None)
        if isinstance(value, int):
            return value
    return None
