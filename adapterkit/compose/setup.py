"""A model ready to train a combination of saved adapters on a task (what `adapterkit fuse` runs):
the adapters loaded (folders or "hub:REPO[:TAG]") and frozen, the combination activated, and
only its trainable part left trainable: the fusion layers and the head, or the head alone for
average and split."""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from adapterkit.compose.fusion import add_fusion, train_fusion
from adapterkit.compose.fusion_layer import FusionConfig
from adapterkit.errors import AdapterkitError
from adapterkit.model import head_parameters, set_active, train_only

COMPOSITIONS = ("fusion", "average", "split")


@dataclass
class Combination:
    """Which saved adapters, combined how (options as in set_active / FusionConfig)."""

    adapters: list[str]
    composition: str = "fusion"
    fusion: dict = field(default_factory=dict)  # FusionConfig fields
    weights: list[float] | None = None  # average
    splits: list[int] | None = None  # split at token positions
    segments: bool = False  # split by token_type_ids

    def __post_init__(self) -> None:
        if self.composition not in COMPOSITIONS:
            raise AdapterkitError(f"composition must be one of {', '.join(COMPOSITIONS)}; got {self.composition!r}")
        if len(self.adapters) < 1 or (self.composition != "fusion" and len(self.adapters) < 2):
            raise AdapterkitError(f"--adapters: {self.composition} needs {'one' if self.composition == 'fusion' else 'two'} "
                                  f"or more adapters, got {len(self.adapters)}")
        FusionConfig(**self.fusion)  # refuses bad settings before any work

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def load_sources(model: nn.Module, sources: list[str]) -> list[str]:
    """Load saved adapters by folder or hub reference, named as saved (name_2, ... on a clash)."""
    from pathlib import Path

    from adapterkit.io import load_adapter, read_manifest
    from adapterkit.model import list_adapters

    names = []
    for source in sources:
        base = source if source.startswith("hub:") else read_manifest(Path(source))["name"]
        base = base.rsplit("/", 1)[-1].split(":")[0].replace("-", "_") if source.startswith("hub:") else base
        name, i = base, 2
        while name in list_adapters(model):
            name, i = f"{base}_{i}", i + 1
        names.append(load_adapter(model, source, name=name, activate=False))
    return names


def prepare(model: nn.Module, combination: Combination, fusion_name: str = "fusion") -> list[str]:
    """Load the combination's adapters into `model`, activate it, train only its new parts."""
    names = load_sources(model, combination.adapters)
    if combination.composition == "fusion":
        add_fusion(model, fusion_name, names, FusionConfig(**combination.fusion), activate=False)
        train_fusion(model, fusion_name)
        return names
    options = {"weights": combination.weights} if combination.composition == "average" else \
        ({"segments": True} if combination.segments else {"splits": combination.splits})
    set_active(model, names, combination.composition, **options)
    train_only(model, head_parameters(model).values())
    return names
