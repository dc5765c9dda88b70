"""Adapter kinds. Add a kind with `@register_adapter_kind("name")` on a builder
`(config, hidden_dim) -> nn.Module`; the module maps (..., d) -> (..., d)."""
from __future__ import annotations

from typing import Callable

from torch import nn

from adapterkit.errors import AdapterkitError
from adapterkit.modules.bottleneck import BottleneckAdapter

AdapterBuilder = Callable[..., nn.Module]
ADAPTER_KINDS: dict[str, AdapterBuilder] = {}


def register_adapter_kind(name: str) -> Callable[[AdapterBuilder], AdapterBuilder]:
    def decorate(builder: AdapterBuilder) -> AdapterBuilder:
        if name in ADAPTER_KINDS:
            raise ValueError(f"adapter kind {name!r} is already registered")
        ADAPTER_KINDS[name] = builder
        return builder

    return decorate


def build_adapter(config, hidden_dim: int) -> nn.Module:
    try:
        builder = ADAPTER_KINDS[config.kind]
    except KeyError:
        raise AdapterkitError(f"unknown adapter kind {config.kind!r}; known: {sorted(ADAPTER_KINDS)}") from None
    return builder(config, hidden_dim)


@register_adapter_kind("bottleneck")
def _bottleneck(config, hidden_dim: int) -> nn.Module:
    return BottleneckAdapter(
        hidden_dim,
        config.bottleneck_for(hidden_dim),
        activation=config.activation,
        scaling=config.scaling,
        init=config.init,
        dropout=config.dropout,
    )


__all__ = ["BottleneckAdapter", "register_adapter_kind", "build_adapter", "ADAPTER_KINDS"]
