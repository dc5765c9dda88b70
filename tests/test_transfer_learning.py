"""Transfer algorithms learn: on three small domains whose label is plain in the words, the
target-domain test accuracy of every algorithm beats chance by far (a learner that does not
train, or trains the wrong parameters, stays near 0.5: the control tests show it).

The algorithms that read the model's own [CLS] head (the meta-learners and metakd) run on a
tiny BERT initialised with std 0.2 instead of 0.02: at 0.02 the words reach the [CLS] state only
through attention products ~1e-3 of its own embedding, and no head trained for a few steps reads
them (every such algorithm stays at 0.5 there, learning or not)."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from adapterkit.data import add_domain_file
from adapterkit.transfer import TransferSpec, run_algorithm
from adapterkit.transfer.registry import ALGORITHMS, load_builtin_algorithms

load_builtin_algorithms()
META = {"metaft": {"meta_steps": 30, "meta_lr": 1e-2}, "reptile": {"meta_steps": 30, "inner_lr": 0.1},
        "fomaml": {"meta_steps": 30, "meta_lr": 1e-2}, "metadtl": {"meta_steps": 30, "meta_lr": 1e-2}}
OPTIONS = {  # settings that let the slower-starting algorithms finish in a few seconds
    "ruder-plank": {"bo_init": 3, "bo_iter": 2},
    "kd": {"student_layers": 1, "kd_lr": 1e-2, "method": "vanilla"},
    "metakd": {"student_layers": 1, "kd_lr": 1e-2},
    **META,
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


def _spec(model_dir, name: str, lr: float) -> TransferSpec:
    return TransferSpec(source=["cars", "shoes"], target="phones", model=str(model_dir), max_seq_len=16,
                        epochs=5, batch_size=8, lr=lr, seed=0, options=OPTIONS.get(name, {}))


def test_without_learning_the_slice_is_at_chance(separable_domains, tiny_bert_dir):
    """The control: with lr 1e-12 nothing moves, and the random head scores at chance (so >= 0.8
    below is learnt, not a lucky random head)."""
    assert run_algorithm("fs", _spec(tiny_bert_dir, "fs", 1e-12))["test"]["accuracy"] <= 0.6


LEARNERS = ["average", "drss", "drss-adv", "fs", "fusion", "kd", "merge", "mgtl", "mixed", "rtl", "ruder-plank",
            "sequential", "source-only", "ss", "ss-adv", "target-only"]
FAST = {"fs", "target-only", "rtl"}  # the rest take ~20 s each on a CPU: slow tier


def test_every_builtin_algorithm_is_covered():
    builtin = {name for name, fn in ALGORITHMS.items() if fn.__module__.startswith("adapterkit.")}
    assert set(LEARNERS) | set(META) | {"metakd"} == builtin


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in LEARNERS])
def test_algorithm_beats_chance_on_separable_domains(name, separable_domains, tiny_bert_dir):
    torch.set_num_threads(1)
    accuracy = run_algorithm(name, _spec(tiny_bert_dir, name, 5e-2))["test"]["accuracy"]
    assert accuracy >= 0.8, f"{name}: test accuracy {accuracy:.3f} on separable domains (chance 0.5)"


@pytest.fixture(scope="module")
def cls_bert_dir(tmp_path_factory):
    """The 2-layer, width-32 BERT of tiny_bert_dir, initialised with std 0.2 (see the module docstring)."""
    from transformers import BertConfig, BertForSequenceClassification

    from adapterkit.backbone import load_tokenizer

    folder = tmp_path_factory.mktemp("cls-bert")
    tokenizer = load_tokenizer(None)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, initializer_range=0.2)
    BertForSequenceClassification(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def _falls(losses: list[float]) -> bool:
    """The mean of the last five losses is below half the mean of the first five."""
    return sum(losses[-5:]) < 0.5 * sum(losses[:5])


@pytest.mark.slow
def test_without_meta_learning_the_start_is_at_chance(separable_domains, cls_bert_dir):
    """The control for the meta-learners: no meta step and no fine-tuning step moves anything."""
    spec = dataclasses.replace(_spec(cls_bert_dir, "metaft", 1e-12), options={**META["metaft"], "meta_lr": 1e-12})
    assert run_algorithm("metaft", spec)["test"]["accuracy"] <= 0.6


@pytest.mark.parametrize("name", ["reptile", pytest.param("metaft", marks=pytest.mark.slow),
                                  pytest.param("fomaml", marks=pytest.mark.slow)])
def test_meta_learned_start_beats_chance_before_target_training(name, separable_domains, cls_bert_dir):
    """metaft, reptile and fomaml meta-learn the adapter and the head on the sources; with a target
    learning rate of 1e-12 the score is the meta-learned start's alone."""
    torch.set_num_threads(1)
    result = run_algorithm(name, _spec(cls_bert_dir, name, 1e-12))
    losses = result["meta"].get("history", {}).get("task") or result["meta"]["losses"]
    assert _falls(losses), f"{name}: meta-training losses {losses}"
    assert result["test"]["accuracy"] >= 0.8, f"{name}: start's test accuracy {result['test']['accuracy']:.3f}"


@pytest.mark.slow
def test_metadtl_learns_across_tasks_then_on_the_target(separable_domains, cls_bert_dir):
    """metadtl's start is the adapter alone (each task has its own head): its meta-training loss
    falls, then the target's new head learns over it."""
    torch.set_num_threads(1)
    result = run_algorithm("metadtl", _spec(cls_bert_dir, "metadtl", 1e-2))
    assert _falls(result["meta"]["history"]["task"]), result["meta"]["history"]["task"]
    assert result["test"]["accuracy"] >= 0.8


@pytest.mark.slow
def test_metakd_teacher_and_student_learn(separable_domains, cls_bert_dir):
    """The meta-teacher learns the target, the distillation loss falls and the student scores like it."""
    torch.set_num_threads(1)
    result = run_algorithm("metakd", _spec(cls_bert_dir, "metakd", 1e-2))
    assert result["teacher_test"]["accuracy"] >= 0.8
    assert result["final_loss"] < 0.5 * result["first_loss"], (result["first_loss"], result["final_loss"])
    assert result["test"]["accuracy"] >= 0.8
