"""Flexible multi-task model mechanics on tiny BERTs: the growth rule on the paper's numbers,
merged outputs vs standalone task models, modular add/remove, the adapter variant, save/load, CLI."""
from __future__ import annotations

import copy
import re
import hashlib
import json

import pytest
import torch
import transformers as T
from typer.testing import CliRunner

from adapterkit import BottleneckConfig, add_adapter
from adapterkit.errors import AdapterkitError
from adapterkit.multitask.model import MultiTaskModel
from adapterkit.multitask.io import load_multitask, save_multitask
from adapterkit.multitask.train import choose_layers
from adapterkit.transfer.student import make_student


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Wei et al. 2022, table 5: dev scores of KD-1, KD-2, KD-3 and the partially fine-tuned teacher
# (its L task layers), and the (frozen, task) layers the paper reports for c = 1, 2, 3.
TABLE5 = {  # task: (L, [KD-1, KD-2, KD-3, teacher], {c: chosen task layers})
    "qnli": (10, [86.4, 88.6, 90.2, 91.7], {1: 3, 2: 2, 3: 1}),
    "rte": (5, [66.1, 64.6, 66.8, 71.5], {1: 5, 2: 1, 3: 1}),
    "qqp": (10, [91.0, 91.3, 91.2, 91.1], {1: 1, 2: 1, 3: 1}),
    "mnli": (8, [77.5, 81.7, 82.9, 84.5], {1: 3, 2: 2, 3: 2}),
    "sst2": (6, [90.7, 92.7, 92.7, 93.1], {1: 2, 2: 2, 3: 1}),
    "mrpc": (5, [85.1, 86.3, 88.0, 89.7], {1: 3, 2: 1, 3: 1}),
    "cola": (8, [36.4, 44.0, 50.0, 55.2], {1: 8, 2: 3, 3: 3}),
    "stsb": (8, [88.3, 88.6, 88.9, 88.9], {1: 1, 2: 1, 3: 1}),
}


@pytest.mark.parametrize("task", sorted(TABLE5))
def test_growth_rule_reproduces_the_papers_table5(task):
    big_l, scores, chosen = TABLE5[task]
    candidates = list(zip([1, 2, 3, big_l], scores))
    for c, layers in chosen.items():
        assert candidates[choose_layers(candidates, c)][0] == layers, (task, c)


def test_growth_rule_edges():
    assert choose_layers([(1, 50.0)], 1.0) == 0
    assert choose_layers([(1, 50.0), (2, 51.0)], 1.0) == 1  # a gain equal to c is enough
    assert choose_layers([(1, 50.0), (2, 50.9)], 1.0) == 0
    assert choose_layers([(1, 50.0), (2, 49.0), (4, 56.0)], 2.0) == 2  # skips a worse middle candidate


def pretrained(layers: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    config = T.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                          intermediate_size=64, num_labels=2)
    return T.BertForSequenceClassification(config).eval()


def finetuned(model, from_layer: int, seed: int, num_labels: int = 2):
    """Stand-in for training: change every weight of the layers >= from_layer and the head."""
    model = copy.deepcopy(model)
    if num_labels != model.config.num_labels:
        model.classifier = torch.nn.Linear(model.config.hidden_size, num_labels)
        model.config.num_labels = num_labels
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, layer in enumerate(model.bert.encoder.layer):
            if i >= from_layer:
                for p in layer.parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
        for p in [*model.bert.pooler.parameters(), *model.classifier.parameters()]:
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    return model.eval()


def inputs(batch: int = 6, length: int = 9, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 99, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[4, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def tasks():
    """Standalone task models on one pre-trained backbone, as the pipeline makes them:
    a partially fine-tuned teacher (b=1, L=3), a distilled student (b=2, l=1, from a teacher with
    L=2, 3 labels) and an adapter model (adapters in layers 3.. only)."""
    base = pretrained()
    teacher_a = finetuned(base, 1, seed=1)
    student_b = finetuned(make_student(finetuned(base, 2, seed=2, num_labels=3), 3), 2, seed=3, num_labels=3).eval()
    adapter_c = copy.deepcopy(base)
    add_adapter(adapter_c, "c", BottleneckConfig(bottleneck_dim=8, layers=[3], init="houlsby"))
    return base, {"a": (teacher_a, 1), "b": (student_b, 2), "c": (adapter_c, 3)}


def merged_of(base, models: dict) -> MultiTaskModel:
    merged = MultiTaskModel.from_backbone(base)
    for name, (model, b) in models.items():
        merged.add_model(name, model, b)
    return merged


def test_merged_outputs_equal_each_standalone_model(tasks):
    base, models = tasks
    merged, x = merged_of(base, models), inputs()
    out = merged(**x)
    for name, (model, _) in models.items():
        with torch.no_grad():
            standalone = model(**x).logits
        assert torch.equal(out.logits[name], standalone), name  # bit for bit
        assert torch.equal(merged.extract(name)(**x).logits, standalone), name
    assert out.logits["b"].shape == (6, 3)
    assert merged.overhead() == {"trunk": 3, "per_task": {"a": 3, "b": 1, "c": 1}, "total": 8, "separate": 12,
                                 "fraction": 8 / 12, "shape": {"a": (1, 3), "b": (2, 1), "c": (3, 1)}}


def test_trunk_runs_once_up_to_the_highest_branch_point(tasks):
    base, models = tasks
    merged, calls = merged_of(base, models), []
    hooks = [layer.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, layer in enumerate(merged.layers)]
    merged(**inputs(), tasks=["a", "b"])
    assert calls == [0, 1]  # a branches at 1, b at 2: trunk layers 0 and 1, once each
    calls.clear()
    merged(**inputs(), tasks=["a", "b", "c"])
    assert calls == [0, 1, 2, 3]  # c's branch runs shared layer 3 with its adapter
    for h in hooks:
        h.remove()


def test_per_example_task_choice_inside_a_batch(tasks):
    base, models = tasks
    merged, x = merged_of(base, models), inputs()
    full = merged(**x)
    out = merged(**x, row_tasks=["a", "b", ["a", "c"], "c", "b", ["a", "b", "c"]])
    assert out.rows["a"].tolist() == [0, 2, 5] and out.rows["b"].tolist() == [1, 4, 5] and out.rows["c"].tolist() == [2, 3, 5]
    for name in "abc":  # same numbers as running the task on every row (up to batch-size rounding)
        assert torch.allclose(out.logits[name], full.logits[name][out.rows[name]], atol=1e-6)
    with pytest.raises(AdapterkitError, match="unknown task"):
        merged(**x, tasks=["zzz"])


def test_removing_a_task_leaves_the_others_bit_identical(tasks, tmp_path):
    base, models = tasks
    merged, x = merged_of(base, models), inputs()
    before = merged(**x)
    save_multitask(merged, tmp_path / "m")
    files = {p.name: _digest(p) for p in (tmp_path / "m").glob("branch-*")}
    for gone, keep in (("c", ["a", "b"]), ("b", ["a"])):
        merged.remove(gone)
        after = merged(**x)
        assert sorted(after.logits) == keep
        for name in keep:
            assert torch.equal(after.logits[name], before.logits[name])
    assert len(merged.layers) == 1 and merged.overhead()["total"] == 1 + 3
    # the same on disk: removing through the files rewrites neither the trunk nor the other branches
    from adapterkit.multitask.io import delete_task

    loaded = load_multitask(tmp_path / "m")
    trunk = _digest(tmp_path / "m" / "trunk.safetensors")
    loaded.remove("b")
    delete_task(loaded, tmp_path / "m", "b")
    assert not (tmp_path / "m" / "branch-b.safetensors").exists()
    assert {p.name: _digest(p) for p in (tmp_path / "m").glob("branch-*")} == {k: v for k, v in files.items() if k != "branch-b.safetensors"}
    assert _digest(tmp_path / "m" / "trunk.safetensors") == trunk  # the adapter task c still needs every layer
    again = load_multitask(tmp_path / "m")
    for name in ("a", "c"):
        assert torch.equal(again(**x).logits[name], before.logits[name])


def test_adding_a_task_does_not_touch_the_others(tasks, tmp_path):
    from adapterkit.multitask.io import save_task

    base, models = tasks
    merged, x = merged_of(base, {"a": models["a"]}), inputs()
    save_multitask(merged, tmp_path / "m")
    a_file = _digest(tmp_path / "m" / "branch-a.safetensors")
    before = merged(**x).logits["a"]
    merged.add_model("b", *models["b"])
    save_task(merged, tmp_path / "m", "b")
    assert _digest(tmp_path / "m" / "branch-a.safetensors") == a_file
    loaded = load_multitask(tmp_path / "m")
    assert torch.equal(loaded(**x).logits["a"], before)
    assert torch.equal(loaded(**x).logits["b"], models["b"][0](**x).logits.detach())
    with pytest.raises(AdapterkitError, match="already has a task"):
        loaded.add_model("b", *models["b"])


def test_save_load_round_trip_is_safetensors_and_json(tasks, tmp_path):
    base, models = tasks
    merged, x = merged_of(base, models), inputs()
    save_multitask(merged, tmp_path / "m")
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == ["branch-a.safetensors", "branch-b.safetensors", "branch-c.safetensors", "multitask.json",
                     "trunk.safetensors"]
    manifest = json.loads((tmp_path / "m" / "multitask.json").read_text())
    assert manifest["trunk_layers"] == 4
    assert {t: (e["kind"], e["branch_layer"], e["num_layers"], e["num_labels"]) for t, e in manifest["branches"].items()} == {
        "a": ("layers", 1, 3, 2), "b": ("layers", 2, 1, 3), "c": ("adapter", 3, 0, 2)}
    loaded = load_multitask(tmp_path / "m")
    for name in "abc":
        assert torch.equal(loaded(**x).logits[name], merged(**x).logits[name])


def test_merging_refuses_models_that_changed_the_shared_layers(tasks):
    base, models = tasks
    merged = merged_of(base, {"a": models["a"]})
    with pytest.raises(AdapterkitError, match="differ from the shared trunk"):
        merged.add_model("x", finetuned(base, 0, seed=9), 1)  # its layer 0 was fine-tuned too
    other = pretrained(seed=5)
    with pytest.raises(AdapterkitError, match="differ from the shared trunk"):
        merged.add_model("y", other, 1)
    low = copy.deepcopy(base)
    add_adapter(low, "low", BottleneckConfig(bottleneck_dim=4, layers=[1, 2, 3]))
    with pytest.raises(AdapterkitError, match="below the branch layer"):
        merged.add_model("z", low, 2)
    assert merged.tasks == ["a"]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pipeline_students_start_from_the_teachers_layers(tiny_bert_dir, glue_dir):
    """fit_task: the KD-l candidate's branch starts at the teacher's branch layer and trains l
    layers; students and teacher are scored on dev; assembling a budget picks them."""
    from adapterkit.backbone import load_tokenizer
    from adapterkit.multitask.train import MultiTaskConfig, assemble, fit_task

    cfg = MultiTaskConfig(tasks=["sst2"], model=str(tiny_bert_dir), n_min=1, n_max=2, epochs=1, kd_epochs=1,
                          batch_size=8, max_seq_len=24, train_limit=16, data_dir=str(glue_dir))
    result = fit_task("sst2", cfg, load_tokenizer(str(tiny_bert_dir)), log=lambda *a: None)
    assert sorted(result.search) == [1, 2]
    names = [(c.name, c.branch_layer, c.num_layers) for c in result.candidates]
    b = 2 - result.best_L
    assert names == ([("kd1", b, 1)] if result.best_L == 2 else []) + [("teacher", b, result.best_L)]
    source = T.BertForSequenceClassification.from_pretrained(str(tiny_bert_dir))
    merged = assemble([result], source, "kd1")
    assert merged.overhead()["shape"] == {"sst2": (b, 1)}


runner = CliRunner()


def _cli(*args):
    from adapterkit.cli import _register_all, app

    _register_all()
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_multitask_cli_build_predict_add_remove(tiny_bert_dir, glue_dir, tmp_path):
    out = tmp_path / "mt"
    common = ["--model", tiny_bert_dir, "--data-dir", glue_dir, "--train-limit", 16, "--epochs", 1, "--kd-epochs", 1,
              "--n-min", 1, "--n-max", 2, "--max-seq-len", 24, "--batch-size", 8]
    printed = _cli("multitask", "build", "--tasks", "cola,mrpc", "--output", out, "--budget", "kd1", *common)
    assert "transformer layers to serve 2 tasks" in printed
    manifest = json.loads((out / "multitask.json").read_text())
    assert sorted(manifest["branches"]) == ["cola", "mrpc"]
    assert all(e["num_layers"] == 1 and e["info"]["candidate"] in ("kd1", "teacher") for e in manifest["branches"].values())
    search = json.loads((out / "search.json").read_text())
    assert [t["task"] for t in search["tasks"]] == ["cola", "mrpc"]
    rows = [{"sentence": "the cat sat on the mat", "task": "cola"},
            {"sentence1": "a man plays", "sentence2": "a man is playing", "task": ["mrpc", "cola"]},
            {"sentence": "no task given"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _cli("multitask", "predict", "--bundle", out, "--input", tmp_path / "in.jsonl", "--output", tmp_path / "out.jsonl")
    preds = [json.loads(line)["predictions"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [sorted(p) for p in preds] == [["cola"], ["cola", "mrpc"], ["cola", "mrpc"]]
    assert preds[0]["cola"]["label"] in ("0", "1") and 0.5 <= preds[0]["cola"]["probability"] <= 1.0
    mrpc = _digest(out / "branch-mrpc.safetensors")
    _cli("multitask", "remove", "--bundle", out, "--task", "cola")
    _cli("multitask", "add", "--bundle", out, "--task", "rte", "--budget", "teacher", *common[2:])
    assert _digest(out / "branch-mrpc.safetensors") == mrpc
    info = _cli("multitask", "info", "--model", out)  # --model: the deprecated name of --bundle
    assert "mrpc" in info and "rte" in info and "cola" not in info
    assert re.search(r"dev -?[01]\.\d{4}", info)  # the 0-1 scale of train and eval
