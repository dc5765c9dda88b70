"""Baselines for the transfer tables (EasyTransfer tables 8 and 9): one adapter and one head.

All of them get the same budget as the joint algorithms in feature.py / instance.py, whose
T = `epochs` x (target batches) steps each see one target and one source batch:
- target-only: T steps on target batches;
- source-only: T steps on source batches (source domains in turn), never sees a target label;
- mixed: 2T steps on batches drawn from the shuffled union of source and target rows (the same
  number of rows as the joint algorithms, but in the union's proportions);
- sequential: T steps on source batches, then T steps on target batches with a fresh optimiser
  (fine-tuning the source-trained adapter and head; "Fine-Tune" in table 8).
"""
from __future__ import annotations

from typing import Iterator

from adapterkit.toolkit.schedule import fit
from adapterkit.transfer.kit import Run, setup
from adapterkit.transfer.registry import TransferSpec, register_algorithm

ADAPTER = ["transfer"]


def _one_adapter(spec: TransferSpec) -> tuple[Run, int]:
    run, _ = setup(spec)
    run.add_adapters(*ADAPTER)
    run.add_heads("transfer")
    return run, run.steps(len(run.target.train))


def _train(run: Run, batches: Iterator[dict], steps: int) -> list[float]:
    return fit(run.params(ADAPTER), steps, lambda i: run.loss(next(batches), ADAPTER, "transfer"), run.spec.lr)


def _sources(run: Run) -> Iterator[dict]:
    return (batch for _, batch in run.source_stream())


@register_algorithm("target-only", needs_sources=False)
def target_only(spec: TransferSpec) -> dict:
    """Tgt-Only: an adapter and head trained on the target rows alone."""
    run, steps = _one_adapter(spec)
    losses = _train(run, run.stream(run.target.train), steps)
    return run.result(ADAPTER, "transfer", steps=len(losses))


@register_algorithm("source-only")
def source_only(spec: TransferSpec) -> dict:
    """Src-Only: an adapter and head trained on the source domains, tested on the target."""
    run, steps = _one_adapter(spec)
    losses = _train(run, _sources(run), steps)
    return run.result(ADAPTER, "transfer", steps=len(losses))


@register_algorithm("mixed")
def mixed(spec: TransferSpec) -> dict:
    """Mixed: an adapter and head trained on the shuffled union of source and target rows."""
    run, steps = _one_adapter(spec)
    union = [row for d in run.sources for row in run.data[d].train] + run.target.train
    losses = _train(run, run.stream(union), 2 * steps)
    return run.result(ADAPTER, "transfer", steps=len(losses))


@register_algorithm("sequential")
def sequential(spec: TransferSpec) -> dict:
    """Sequential fine-tuning: train on the sources, then continue on the target rows."""
    run, steps = _one_adapter(spec)
    first = _train(run, _sources(run), steps)
    second = _train(run, run.stream(run.target.train), steps)
    return run.result(ADAPTER, "transfer", steps=len(first) + len(second))
