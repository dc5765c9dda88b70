"""Configuration: the adapter's (BottleneckConfig: validated on construction, JSON round trip), the
optimisation settings every trainer shares (Schedule), and the one rule per training setting
(SETTING_RULES, check_settings) that every command's config is checked with."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Union

from adapterkit.errors import AdapterkitError

Sharing = Union[int, str]  # N (layers per group), "all" or "none"

ACTIVATIONS = ("gelu", "relu", "swish", "silu", "tanh")
PLACEMENTS = ("houlsby", "pfeiffer")
INITS = ("zero", "houlsby")


def check_number(name: str, value: Any, minimum: float | None = None, above: float | None = None,
                 maximum: float | None = None, below: float | None = None, integer: bool = False) -> Any:
    """`value` when it is a finite number (an integer if asked) within the bounds given; otherwise
    an AdapterkitError naming `name` (NaN and infinities are always refused)."""
    kind = "an integer" if integer else "a finite number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)):
        raise AdapterkitError(f"{name} must be {kind}, got {value!r}")
    for bound, fails, words in ((minimum, lambda b: value < b, ">="), (above, lambda b: value <= b, ">"),
                                (maximum, lambda b: value > b, "<="), (below, lambda b: value >= b, "<")):
        if bound is not None and fails(bound):
            raise AdapterkitError(f"{name} must be {words} {bound:g}, got {value!r}")
    return value


# The rule for each training setting, wherever a config carries it (TrainConfig, LoopSettings,
# TransferSpec, MultiTaskConfig, the distillation configs): written once, checked by check_settings.
_POSITIVE_INT = dict(minimum=1, integer=True)
SETTING_RULES: dict[str, dict] = {
    **{name: _POSITIVE_INT for name in ("epochs", "kd_epochs", "batch_size", "eval_batch_size",
                                        "gradient_accumulation_steps", "max_steps", "eval_steps",
                                        "early_stopping_patience", "train_limit")},
    "max_seq_len": dict(minimum=2, integer=True),  # room for [CLS] and [SEP]
    **{name: dict(above=0.0) for name in ("lr", "kd_lr", "temperature")},
    "warmup_ratio": dict(minimum=0.0, maximum=1.0),
    "weight_decay": dict(minimum=0.0),
    "alpha": dict(minimum=0.0, maximum=1.0),
}
# None means "not set" (no limit, the default) for these
OPTIONAL_SETTINGS = ("max_steps", "eval_steps", "early_stopping_patience", "train_limit")


def check_settings(cfg: Any, optional: tuple[str, ...] = ()) -> None:
    """Check every setting of SETTING_RULES that `cfg` has; `None` passes for OPTIONAL_SETTINGS
    and for the names in `optional` (those a config resolves later, such as TrainConfig's lr)."""
    for name, rule in SETTING_RULES.items():
        if not hasattr(cfg, name):
            continue
        value = getattr(cfg, name)
        if value is None and (name in OPTIONAL_SETTINGS or name in optional):
            continue
        check_number(name, value, **rule)


@dataclass(kw_only=True)
class Schedule:
    """The optimisation settings every trainer shares: the training loop (LoopSettings, hence
    `adapterkit train`'s TrainConfig), teacher training and distillation (transfer.kd). A config
    inherits them and changes a default with `field(default=..., kw_only=True)`. Keyword-only, so a
    config's own fields keep their positions."""

    epochs: int = 3
    max_steps: int | None = None  # stop after this many optimizer steps (None: all epochs)
    lr: float | None = 1e-3
    batch_size: int = 32
    warmup_ratio: float = 0.1  # linear warmup over this share of the steps, then linear decay
    seed: int = 42  # as every CLI command

    def __post_init__(self) -> None:
        check_settings(self)


def parse_sharing(value: Any) -> Sharing:
    """Normalise a sharing value: a positive int, "all" or "none" (strings of digits are ints)."""
    if isinstance(value, bool):
        raise AdapterkitError(f"sharing must be a positive integer, 'all' or 'none', got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise AdapterkitError(f"sharing must be >= 1 (layers per shared adapter), got {value}")
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("all", "none"):
            return text
        if text.isdigit():
            return parse_sharing(int(text))
    raise AdapterkitError(f"sharing must be a positive integer, 'all' or 'none', got {value!r}")


@dataclass
class BottleneckConfig:
    """How a bottleneck adapter is built, where it goes and which sites share it.

    Size: give `bottleneck_dim` (m) or `reduction_factor` (m = hidden // factor); default m = 64.
    Sharing: `sharing=N` makes N consecutive adapted layers share one module; "all" shares one
    module across every layer of a stack; "none" gives every site its own module. With
    `share_sites=True` (the reference report's choice) the attention and feed-forward sites of a
    group share too; with False each site kind gets its own module per group.
    Placement: "houlsby" adapts after attention output and after the feed-forward output;
    "pfeiffer" only after the feed-forward output.
    Layers: `layers` (explicit indices), `top_n` (the top N layers) and `leave_out` select which
    layers are adapted; indices count from 0 within each layer stack.
    `targets` overrides site discovery with regular expressions on module names:
    {"layers": ..., "attn": ..., "ffn": ...} (see adapterkit.sharing.sites).
    """

    bottleneck_dim: int | None = None
    reduction_factor: float | None = None
    activation: str = "gelu"
    scaling: float = 1.0
    init: str = "zero"
    dropout: float = 0.0
    placement: str = "houlsby"
    sharing: Sharing = 1
    share_sites: bool = True
    layers: list[int] | None = None
    top_n: int | None = None
    leave_out: list[int] = field(default_factory=list)
    train_layer_norms: bool = False
    targets: dict[str, str] | None = None
    kind: str = "bottleneck"

    def __post_init__(self) -> None:
        if self.bottleneck_dim is not None and self.reduction_factor is not None:
            raise AdapterkitError("give bottleneck_dim or reduction_factor, not both")
        if self.bottleneck_dim is not None and (not isinstance(self.bottleneck_dim, int) or self.bottleneck_dim <= 0):
            raise AdapterkitError(f"bottleneck_dim must be a positive integer, got {self.bottleneck_dim!r}")
        if self.reduction_factor is not None:
            check_number("reduction_factor", self.reduction_factor, above=0)
        check_number("scaling", self.scaling)
        if self.bottleneck_dim is None and self.reduction_factor is None:
            self.bottleneck_dim = 64
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("placement", self.placement, PLACEMENTS)
        _check_choice("init", self.init, INITS)
        self.sharing = parse_sharing(self.sharing)
        if self.top_n is not None and self.top_n < 1:
            raise AdapterkitError(f"top_n must be >= 1, got {self.top_n}")
        if self.layers is not None and (self.top_n is not None):
            raise AdapterkitError("give layers or top_n, not both")
        check_number("dropout", self.dropout, minimum=0.0, below=1.0)
        if self.targets is not None:
            unknown = set(self.targets) - {"layers", "attn", "ffn"}
            if unknown:
                raise AdapterkitError(f"targets keys must be 'layers', 'attn', 'ffn'; got {sorted(unknown)}")
            _check_patterns(self.targets)

    def bottleneck_for(self, hidden: int) -> int:
        if self.bottleneck_dim is not None:
            return self.bottleneck_dim
        return max(1, int(hidden // self.reduction_factor))

    def site_kinds(self) -> tuple[str, ...]:
        return ("attn", "ffn") if self.placement == "houlsby" else ("ffn",)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BottleneckConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise AdapterkitError(f"unknown adapter config fields: {sorted(unknown)}")
        return cls(**data)


def _check_patterns(targets: dict) -> None:
    import re

    for key, pattern in targets.items():
        if not isinstance(pattern, str):
            raise AdapterkitError(f"targets[{key!r}] must be a regular expression string, got {pattern!r}")
        try:
            re.compile(pattern)
        except re.error as e:
            raise AdapterkitError(f"targets[{key!r}] = {pattern!r} is not a valid regular expression ({e})") from None


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise AdapterkitError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
