"""Every registered transfer algorithm learns: on three small domains whose label is plain in
the words ("great" vs "awful"), each one's target-domain test accuracy beats chance by far
(a learner that does not train, or trains the wrong parameters, stays near 0.5)."""
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
    "metakd": {"student_layers": 1, "kd_lr": 1e-2},
}


@pytest.fixture(scope="module")
def separable_domains(tmp_path_factory):
    good, bad = ("great", "lovely", "excellent"), ("awful", "broken", "terrible")
    lines = []
    for domain in ("phones", "cars", "shoes"):
        for i in range(60):
            label = i % 2
            lines.append(json.dumps({"text": f"this {domain} thing number {i} is {(good if label else bad)[i % 3]}",
                                     "label": label, "domain": domain}))
    path = tmp_path_factory.mktemp("domains") / "separable.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return add_domain_file(path)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_algorithm_beats_chance_on_separable_domains(name, separable_domains, tiny_bert_dir):
    torch.set_num_threads(1)
    spec = TransferSpec(source=["cars", "shoes"], target="phones", model=str(tiny_bert_dir), max_seq_len=16,
                        epochs=3, batch_size=8, lr=1e-2, seed=0, options=OPTIONS.get(name, {}))
    accuracy = run_algorithm(name, spec)["test"]["accuracy"]
    assert accuracy >= 0.8, f"{name}: test accuracy {accuracy:.3f} on separable domains (chance 0.5)"
