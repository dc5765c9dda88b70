"""The registry of transfer algorithms: one decorator, one verb.

An algorithm is a function `run(spec: TransferSpec) -> dict` registered under a name:

    @register_algorithm("fs")
    def fully_shared(spec): ...

It returns a JSON-able dict with at least `test` (target-domain test metrics: accuracy, f1)
and writes what it trains (adapters, heads) under `spec.output` when that is set.
`run_algorithm(name, spec)` runs one, times it and writes `results.json`.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from adapterkit.errors import AdapterkitError
from adapterkit.io.atomic import write_json
from adapterkit.precision import check_names as check_precision
from adapterkit.precision import under_precision

Algorithm = Callable[["TransferSpec"], dict]
ALGORITHMS: dict[str, Algorithm] = {}
WITHOUT_SOURCES: set[str] = set()  # algorithms that may run on the target alone
# modules whose import registers the built-in algorithms (one module per family)
_BUILTIN_MODULES = ("feature", "instance", "baselines", "distill", "meta", "fusion")


@dataclass
class TransferSpec:
    """What every transfer algorithm gets. Algorithm-specific settings go in `options`."""

    source: list[str]
    target: str
    target_shots: int | None = None  # None: the whole target train split
    model: str | None = None  # default: bundled all-MiniLM-L6-v2
    seed: int = 42  # as every CLI command
    output: str | None = None
    max_seq_len: int = 128
    batch_size: int = 32  # as every CLI command
    epochs: int = 3
    lr: float = 1e-3
    bottleneck_dim: int | None = 64  # ignored when reduction_factor is set
    sharing: Any = 1
    reduction_factor: float | None = None  # bottleneck width = hidden size / R
    quick: bool = False  # tiny sizes for tests: few rows, few steps
    data_dir: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"  # fp32, bf16 or fp16: the whole run under autocast (adapterkit.precision)

    def __post_init__(self) -> None:
        if not self.source and self.target is None:
            raise AdapterkitError("give at least a target domain")
        if self.target in self.source:
            raise AdapterkitError(f"target {self.target!r} is also a source domain")
        if self.target_shots is not None and self.target_shots < 2:
            raise AdapterkitError(f"target_shots must be >= 2, got {self.target_shots}")
        from adapterkit.config import check_settings

        check_settings(self)  # bottleneck_dim is checked with the adapter config below
        check_precision(self.precision)
        self.adapter_config()  # a bad sharing or width is refused before any work

    def adapter_config(self, **extra):
        """The BottleneckConfig every adapter of the run is made from (sharing, width, + `extra`)."""
        from adapterkit.config import BottleneckConfig

        width = None if self.reduction_factor else self.bottleneck_dim
        return BottleneckConfig(bottleneck_dim=width, reduction_factor=self.reduction_factor, sharing=self.sharing, **extra)


def resolve_options(given: dict, defaults: dict, algorithm: str) -> dict:
    """`given` (spec.options) over `defaults`, the one table of an algorithm's settings; an
    unknown key is refused with one line naming the ones it takes."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise AdapterkitError(f"unknown option(s) {unknown} for {algorithm}; it takes {sorted(defaults)}")
    return {**defaults, **given}


def register_algorithm(name: str, needs_sources: bool = True) -> Callable[[Algorithm], Algorithm]:
    def decorate(fn: Algorithm) -> Algorithm:
        if name in ALGORITHMS:
            raise ValueError(f"transfer algorithm {name!r} is already registered")
        ALGORITHMS[name] = fn
        if not needs_sources:
            WITHOUT_SOURCES.add(name)
        return fn

    return decorate


def load_builtin_algorithms() -> None:
    for module in _BUILTIN_MODULES:  # a missing module is an error, never a silently absent algorithm
        importlib.import_module(f"adapterkit.transfer.{module}")


@under_precision("spec")
def run_algorithm(name: str, spec: TransferSpec) -> dict:
    load_builtin_algorithms()
    if name not in ALGORITHMS:
        raise AdapterkitError(f"unknown transfer algorithm {name!r}; known: {', '.join(sorted(ALGORITHMS))}")
    if not spec.source and name not in WITHOUT_SOURCES:
        raise AdapterkitError(f"{name} learns from source domains: give --source (e.g. --source books,dvd); "
                              f"without sources use {', '.join(sorted(WITHOUT_SOURCES))}")
    t0 = time.perf_counter()
    result = ALGORITHMS[name](spec)
    result = {"algorithm": name, "spec": asdict(spec), **result, "seconds": time.perf_counter() - t0}
    if spec.output:
        out = Path(spec.output)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "results.json", result, default=str)
    return result
