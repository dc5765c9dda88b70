"""Step-speed and memory switches for training: gradient checkpointing and torch.compile.

`--gradient-checkpointing` recomputes each transformer layer's activations in the backward pass
instead of keeping them (transformers' own per-layer checkpointing, non-reentrant). Layers below
the lowest adapter keep nothing for backward anyway (frozen, no gradient flows there), so the
saving and the recompute cost fall on the adapted layers and those above them. transformers
would also make the embeddings' output require a gradient (what reentrant checkpointing needs);
that would run the backward through every frozen layer, so it is switched off again.

`--compile` wraps the model's forward in `torch.compile` (`nn.Module.compile`, in place: the
model object, its hooks and its state_dict keys stay the same); the backward is compiled with
it. The first steps pay the compile time, and each new padded length may compile again until
dynamic shapes kick in. benchmarks/README.md has the measured trade-off; it is off by default.
"""
from __future__ import annotations

from adapterkit.errors import AdapterkitError


def enable_gradient_checkpointing(model) -> None:
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise AdapterkitError(f"--gradient-checkpointing: {type(model).__name__} does not support it in transformers")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if hasattr(model, "disable_input_require_grads"):
        model.disable_input_require_grads()  # non-reentrant checkpointing needs no gradient below the adapters


def compile_model(model) -> None:
    import torch

    if not hasattr(torch, "compile"):
        raise AdapterkitError("--compile needs torch >= 2.0")
    model.compile()


def apply_speed_options(model, gradient_checkpointing: bool = False, compile: bool = False):
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if compile:
        compile_model(model)
    return model
