"""Combining adapters: fusion, output averaging, weight merging, split, and AdapterDrop.

Importing this package registers the compositions "average", "split" and "fusion" for
`adapterkit.set_active(model, names, composition=..., **options)`.
"""
from adapterkit.compose import average, split  # noqa: F401  (register their compositions)
from adapterkit.compose.drop import adapter_drop, set_adapter_drop
from adapterkit.compose.fusion import (
    activate_fusion,
    add_fusion,
    count_fusion_parameters,
    fusion_parameters,
    fusion_weights,
    remove_fusion,
    train_fusion,
)
from adapterkit.compose.io import load_combination, load_fusion, save_combination, save_fusion
from adapterkit.compose.fusion_layer import FusionConfig, FusionLayer
from adapterkit.compose.merge import merge_adapters

__all__ = [
    "FusionConfig", "FusionLayer", "activate_fusion", "add_fusion", "adapter_drop", "count_fusion_parameters",
    "fusion_parameters", "fusion_weights", "load_combination", "load_fusion", "save_combination", "merge_adapters", "remove_fusion", "save_fusion",
    "set_adapter_drop", "train_fusion",
]
