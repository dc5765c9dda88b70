"""Transfer learning on adapters: each algorithm is a short composition of adapter operations,
registered under a name (`register_algorithm`) and run with one verb (`run_algorithm`, or
`adapterkit transfer run NAME`). Families: feature-based (feature.py), instance-based
(instance.py), baselines (baselines.py), model-based distillation (distill.py), meta-learning
(meta.py). Shared pieces: registry.py (spec, registry), common.py (data, loop, scoring)."""
from adapterkit.transfer.registry import ALGORITHMS, TransferSpec, register_algorithm, run_algorithm

__all__ = ["ALGORITHMS", "TransferSpec", "register_algorithm", "run_algorithm"]
