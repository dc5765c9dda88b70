"""Transfer algorithms learn: on three small domains whose label is plain in the words, the
target-domain test accuracy of every algorithm that reads a mean-pooled feature beats chance by
far (a learner that does not train, or trains the wrong parameters, stays near 0.5: the control
test shows it). Not yet covered: see LEARNERS."""
from __future__ import annotations

import json

import pytest
import torch

from adapterkit.data import add_domain_file
from adapterkit.transfer import TransferSpec, run_algorithm
from adapterkit.transfer.registry import ALGORITHMS, load_builtin_algorithms

load_builtin_algorithms()
OPTIONS = {  # settings that let the slower-starting algorithms finish in a few seconds
    "ruder-plank": {"bo_init": 3, "bo_iter": 2},
    "kd": {"student_layers": 1, "kd_lr": 1e-2, "method": "vanilla"},
}


@pytest.fixture(scope="module")
def separable_domains(tmp_path_factory):
    """Three domains of 60 rows: the domain's name, then four words all from one class's list
    (every row differs; the label is the list), so the mean-pooled features separate."""
    words = (("awful", "broken", "terrible"), ("great", "lovely", "excellent"))
    lines = []
    for domain in ("phones", "cars", "shoes"):
        for i in range(60):
            label, n = i % 2, i // 2
            text = " ".join([domain, *(words[label][n // 3 ** k % 3] for k in range(4))])
            lines.append(json.dumps({"text": text, "label": label, "domain": domain}))
    path = tmp_path_factory.mktemp("domains") / "separable.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return add_domain_file(path)


def _spec(tiny_bert_dir, name: str, lr: float) -> TransferSpec:
    return TransferSpec(source=["cars", "shoes"], target="phones", model=str(tiny_bert_dir), max_seq_len=16,
                        epochs=5, batch_size=8, lr=lr, seed=0, options=OPTIONS.get(name, {}))


def test_without_learning_the_slice_is_at_chance(separable_domains, tiny_bert_dir):
    """The control: with lr 1e-12 nothing moves, and the random head scores at chance (so >= 0.8
    below is learnt, not a lucky random head)."""
    assert run_algorithm("fs", _spec(tiny_bert_dir, "fs", 1e-12))["test"]["accuracy"] <= 0.6


# Not covered yet: the meta-learners (metaft, metadtl, reptile, fomaml) and metakd read the
# model's own [CLS] head, which on this random 2-layer backbone stays at chance within a few
# steps; fusion, average and merge (source adapters first) have not been run on this slice.
LEARNERS = ["drss", "drss-adv", "fs", "kd", "mgtl", "mixed", "rtl", "ruder-plank", "sequential", "source-only",
            "ss", "ss-adv", "target-only"]
FAST = {"fs", "target-only", "rtl"}  # the rest take ~20 s each on a CPU: slow tier


def test_the_covered_learners_are_registered():
    assert set(LEARNERS) <= set(ALGORITHMS)


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in LEARNERS])
def test_algorithm_beats_chance_on_separable_domains(name, separable_domains, tiny_bert_dir):
    torch.set_num_threads(1)
    accuracy = run_algorithm(name, _spec(tiny_bert_dir, name, 5e-2))["test"]["accuracy"]
    assert accuracy >= 0.8, f"{name}: test accuracy {accuracy:.3f} on separable domains (chance 0.5)"
