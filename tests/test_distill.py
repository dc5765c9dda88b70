"""Distillation mechanics on tiny BERTs: student initialisation, losses, MetaKD weights, CLI and Python entry points."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import transformers as T
from typer.testing import CliRunner

from adapterkit import BottleneckConfig, add_adapter, list_adapters
from adapterkit.errors import AdapterkitError
from adapterkit.transfer.kd import KDConfig, TrainConfig, distill, train_supervised
from adapterkit.transfer.kd_losses import KD_METHODS, KDContext, layer_map
from adapterkit.toolkit.features import frozen_features
from adapterkit.transfer.metakd import DomainHead, expertise_weights
from adapterkit.transfer.typicality import typicality_scores
from adapterkit.transfer.student import load_student, make_student, save_student

H = 32


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads; on a shared machine extra threads only oversubscribe."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_teacher(layers: int = 4, seed: int = 0, adapter: bool = True):
    torch.manual_seed(seed)
    config = T.BertConfig(vocab_size=99, hidden_size=H, num_hidden_layers=layers, num_attention_heads=2,
                          intermediate_size=64, num_labels=2)
    model = T.BertForSequenceClassification(config).eval()
    if adapter:  # houlsby init: the adapter is not the identity, so copying it matters
        add_adapter(model, "task", BottleneckConfig(bottleneck_dim=8, sharing=2, init="houlsby"))
    return model


def tiny_rows(n: int = 24, seed: int = 1) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = int(torch.randint(4, 10, (1,), generator=g))
        ids = torch.randint(3, 99, (length,), generator=g).tolist()
        rows.append({"input_ids": ids, "attention_mask": [1] * length, "labels": int(ids[1] > 50)})
    return rows


def batch_of(rows):
    from adapterkit.data import PadCollator

    return PadCollator(0)(rows)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_student_equals_teacher_bottom_layers_before_training(layers):
    teacher = tiny_teacher()
    student = make_student(teacher, layers).eval()
    batch = batch_of(tiny_rows(5))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        t = teacher(**inputs, output_hidden_states=True).hidden_states
        s = student(**inputs, output_hidden_states=True).hidden_states
    assert len(s) == layers + 1
    for i in range(layers + 1):  # embeddings and every student layer, adapters included, bit for bit
        assert torch.equal(s[i], t[i])
    assert list_adapters(student) == ["task"]
    teacher_state = teacher.state_dict()
    assert all(torch.equal(v, teacher_state[k]) for k, v in student.state_dict().items() if not k.startswith("adapterkit"))
    assert student.config.num_hidden_layers == layers and teacher.config.num_hidden_layers == 4


def test_student_deeper_than_teacher_is_refused():
    with pytest.raises(AdapterkitError, match="only 4"):
        make_student(tiny_teacher(), 5)


def test_layer_maps():
    assert layer_map("skip", 2, 6) == [3, 6]
    assert layer_map("skip", 3, 6) == [2, 4, 6]
    assert layer_map("last", 2, 6) == [5, 6]
    assert layer_map("bottom", 2, 6) == [1, 2]
    assert layer_map([2, 5], 2, 6) == [2, 5]
    with pytest.raises(AdapterkitError, match=r"layer_map \[7, 8\] must give 2 teacher layers in 1..6"):
        layer_map([7, 8], 2, 6)  # a user's --layer-map: one line, not a traceback


def test_losses_vanish_when_the_student_is_the_teacher():
    """A full-depth student equals the teacher: every imitation term is exactly 0, so the vanilla
    loss is the hard-label part only."""
    teacher = tiny_teacher(adapter=False)
    teacher.set_attn_implementation("eager")
    student = make_student(teacher, 4).eval()
    rows = tiny_rows(6)
    batch = {**batch_of(rows), "_rows": torch.arange(6)}
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        t = teacher(**inputs, output_hidden_states=True, output_attentions=True)
        s = student(**inputs, output_hidden_states=True, output_attentions=True)
    ctx = KDContext(alpha=1.0, layer_map=layer_map("skip", 4, 4))
    for name in ("vanilla", "pkd", "tinybert"):
        assert torch.allclose(KD_METHODS[name].loss(s, t, batch, ctx), torch.zeros(6), atol=1e-6), name
    ctx.alpha = 0.5
    ce = torch.nn.functional.cross_entropy(s.logits, batch["labels"], reduction="none")
    assert torch.allclose(KD_METHODS["vanilla"].loss(s, t, batch, ctx), 0.5 * ce, atol=1e-6)


@pytest.mark.parametrize("method", ["vanilla", "pkd", "tinybert"])
def test_distillation_brings_the_student_closer_to_the_teacher(method):
    teacher, rows = tiny_teacher(), tiny_rows(16)
    with torch.no_grad():  # a random tiny BERT is nearly uniform: sharpen it so there is something to learn
        teacher.classifier.weight.mul_(40)
    student = make_student(tiny_teacher(seed=5), 1)  # another random model: far from the teacher
    kd = KDConfig(method=method, epochs=6, lr=3e-3, batch_size=8, alpha=1.0, temperature=1.0)
    gap = lambda: _kl(teacher, student, rows)  # noqa: E731
    before = gap()
    history = distill(teacher, student, rows, kd)
    assert history["steps"] == 12
    assert gap() < 0.75 * before
    assert not student.training and not any(p.requires_grad for p in teacher.parameters())


def _kl(teacher, student, rows) -> float:
    from adapterkit.toolkit.scoring import predict_logits

    t, s = predict_logits(teacher, rows, 0).log_softmax(-1), predict_logits(student, rows, 0).log_softmax(-1)
    return float((t.exp() * (t - s)).sum(-1).mean())


def test_narrower_student_trains_through_a_projection():
    teacher, rows = tiny_teacher(), tiny_rows(16)
    student = make_student(teacher, 2, hidden_size=16, num_heads=2, intermediate_size=32)
    assert student.config.hidden_size == 16 and student.config.num_hidden_layers == 2
    history = distill(teacher, student, rows, KDConfig(method="tinybert", epochs=4, lr=3e-3, batch_size=8))
    assert history["projection"] is True
    assert sum(history["losses"][-3:]) < sum(history["losses"][:3])


def test_train_adapter_only_keeps_the_student_backbone():
    teacher, rows = tiny_teacher(), tiny_rows(16)
    student = make_student(teacher, 2)
    frozen = copy.deepcopy(student.bert.encoder.layer[0].attention.self.query.weight)
    distill(teacher, student, rows, KDConfig(method="vanilla", epochs=2, lr=1e-2, batch_size=8, train="adapter"))
    assert torch.equal(student.bert.encoder.layer[0].attention.self.query.weight, frozen)
    with pytest.raises(AdapterkitError, match="needs a student with adapters"):
        distill(teacher, make_student(tiny_teacher(adapter=False), 1), rows, KDConfig(train="adapter"))


def test_prototype_scores_by_hand():
    # two domains, one class: prototypes are the domain means
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels, domains = torch.zeros(4, dtype=torch.long), torch.tensor([0, 0, 1, 1])
    scores = typicality_scores(emb, labels, domains, alpha=0.5)
    assert torch.allclose(scores, torch.full((4,), 0.5))  # 0.5 * cos 1 + 0.5 * cos 0
    emb2 = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    s2 = typicality_scores(emb2, labels, domains, alpha=0.5)
    own = torch.nn.functional.cosine_similarity(emb2[1], emb2[:2].mean(0), dim=0)
    assert math.isclose(float(s2[1]), 0.5 * float(own) + 0.5 * math.sqrt(0.5), rel_tol=1e-5)


def test_prototype_score_of_a_class_no_other_domain_has_is_its_own_domain_term():
    # domain 1 has class 1 only; rows 2-3 of class 1 have no counterpart elsewhere: score = own cosine
    # (MetaKD and MetaFT share this formula; counting the missing cross-domain term as 0 would halve it)
    emb = torch.tensor([[1.0, 0.0], [0.8, 0.2], [0.0, 1.0], [0.3, 1.0]])
    labels, domains = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 1])
    scores = typicality_scores(emb, labels, domains, alpha=0.5)
    own = torch.nn.functional.cosine_similarity(emb[3], emb[2:].mean(0), dim=0)
    assert math.isclose(float(scores[3]), float(own), rel_tol=1e-5)


def test_expertise_weights_favour_confident_correct_teachers():
    logits = torch.tensor([[0.0, 20.0], [20.0, 0.0], [0.0, 0.0]])
    w = expertise_weights(logits, torch.tensor([1, 1, 1]))
    assert math.isclose(float(w[0]), 0.5, rel_tol=1e-6)
    assert math.isclose(float(w[1]), 1 / (1 + math.e), rel_tol=1e-5)
    assert w[1] < w[2] < w[0]


def test_meta_teacher_and_meta_distillation_from_python():
    from adapterkit.transfer.metakd import meta_distill, train_meta_teacher

    teacher, rows = tiny_teacher(), tiny_rows(24)
    domains = torch.tensor([i % 3 for i in range(24)])
    labels = torch.tensor([r["labels"] for r in rows])
    scores = typicality_scores(frozen_features(teacher, rows), labels, domains)
    assert scores.shape == (24,) and bool((scores.abs() <= 1).all())
    before = copy.deepcopy(teacher.state_dict())
    head = train_meta_teacher(teacher, rows, domains, scores, TrainConfig(epochs=2, lr=1e-2, batch_size=8,
                                                                          mode="adapter", adapter="task"))
    assert isinstance(head, DomainHead)
    changed = [k for k, v in teacher.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(k.startswith(("adapterkit.", "classifier.", "bert.pooler.")) for k in changed)
    student = make_student(teacher, 2)
    own = domains == 1
    result = meta_distill(teacher, head, student, [r for r, d in zip(rows, domains) if d == 1], 1, scores[own],
                          KDConfig(epochs=2, batch_size=4, lr=1e-3))
    assert result["steps"] == 4 and all(math.isfinite(x) for x in result["losses"])
    assert 0.27 * (1 + scores[own].min()) - 1e-6 <= result["mean_weight"] <= 0.5 * (1 + scores[own].max()) + 1e-6


def test_save_and_load_student_round_trip(tmp_path):
    student = make_student(tiny_teacher(), 2).eval()
    save_student(student, tmp_path / "s", info={"task": "sst2"})
    assert not list((tmp_path / "s").rglob("*.bin")) and not list((tmp_path / "s").rglob("*.pt"))
    loaded, info = load_student(tmp_path / "s")
    assert info["task"] == "sst2" and list_adapters(loaded) == ["task"]
    batch = batch_of(tiny_rows(3))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        assert torch.equal(student(**inputs).logits, loaded(**inputs).logits)


@pytest.mark.parametrize("name,options", [("kd", {"method": "pkd", "teacher": "mix"}), ("metakd", {})])
def test_registered_transfer_algorithms_run_from_python(name, options, tiny_bert_dir, tmp_path):
    from adapterkit.transfer import TransferSpec, run_algorithm

    spec = TransferSpec(source=["books"], target="dvd", model=str(tiny_bert_dir), quick=True, max_seq_len=32,
                        output=str(tmp_path), options={"student_layers": 1, **options})
    result = run_algorithm(name, spec)
    assert result["method"] == options.get("method", "metakd")
    assert set(result["test"]) == set(result["teacher_test"]) == {"accuracy", "f1"}  # learning: test_transfer_learning.py
    assert result["params"]["student"] < result["params"]["teacher"]
    student, _ = load_student(tmp_path / "student")
    assert student.config.num_hidden_layers == 1
    assert json.loads((tmp_path / "results.json").read_text())["algorithm"] == name


runner = CliRunner()


def _cli(*args):
    from adapterkit.cli import _register_all, app

    _register_all()
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def teacher_run(tiny_bert_dir, glue_dir, tmp_path_factory):
    from adapterkit.training import TrainConfig as RunConfig
    from adapterkit.training import train

    out = tmp_path_factory.mktemp("teacher")
    train(RunConfig(task="sst2", model=str(tiny_bert_dir), data_dir=str(glue_dir), max_steps=2, epochs=1, batch_size=8,
                    max_seq_len=32, output=str(out), adapter=BottleneckConfig(bottleneck_dim=8)),
          progress=False, log=lambda *a: None)
    return out


@pytest.mark.parametrize("method", ["vanilla", "pkd", "tinybert"])
def test_distill_cli_each_method(method, teacher_run, tmp_path):
    out = tmp_path / "student"
    result = _cli("distill", "--teacher", teacher_run, "--student-layers", 1, "--method", method, "--output", out,
                  "--epochs", 1, "--train-limit", 16, "--batch-size", 8)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == method and metrics["steps"] == 2 and metrics["train_rows"] == 16
    assert set(metrics["student_dev"]) == {"accuracy"} and metrics["params"]["student"] < metrics["params"]["teacher"]
    student, info = load_student(out)
    assert student.config.num_hidden_layers == 1 and info["kd"]["method"] == method
    if method == "tinybert":  # a student with the teacher's adapters is scored and used like a run
        assert f"accuracy: {metrics['student_dev']['accuracy']:.4f}" in _cli("eval", "--adapter", out).output
        (tmp_path / "in.jsonl").write_text('{"sentence": "a fine film"}\n{"sentence": "dull"}\n')
        result = _cli("predict", "--adapter", out, "--input", tmp_path / "in.jsonl", "--output", tmp_path / "p.jsonl")
        assert result.exit_code == 0, result.output
        assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 2


def test_distill_cli_narrow_student_and_eval(teacher_run, tmp_path):
    out = tmp_path / "narrow"
    result = _cli("distill", "--teacher", teacher_run, "--student-layers", 1, "--method", "tinybert", "--output", out,
                  "--epochs", 1, "--train-limit", 8, "--student-hidden", 16)
    assert result.exit_code == 0, result.output
    # a student without adapters is a plain model folder that `adapterkit eval` reads
    assert "accuracy:" in _cli("eval", "--adapter", out).output


def test_distill_cli_metakd_on_amazon_domains(tiny_bert_dir, tmp_path):
    out = tmp_path / "metakd"
    result = _cli("distill", "--method", "metakd", "--student-layers", 1, "--output", out, "--model", tiny_bert_dir,
                  "--domains", "books,kitchen", "--targets", "kitchen", "--train-limit", 8, "--eval-limit", 8, "--epochs", 1,
                  "--teacher-epochs", 1, "--max-seq-len", 24, "--batch-size", 8)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["student_test"]) == {"kitchen"} and metrics["domains"] == ["books", "kitchen"]
    assert (out / "meta_teacher" / "domain_head.safetensors").is_file()
    # the saved meta-teacher is reused for another domain's student
    again = _cli("distill", "--method", "metakd", "--teacher", out / "meta_teacher", "--student-layers", 1,
                 "--output", tmp_path / "again", "--domains", "books,kitchen", "--targets", "books",
                 "--train-limit", 8, "--eval-limit", 8, "--epochs", 1, "--max-seq-len", 24)
    assert again.exit_code == 0, again.output
    assert set(json.loads((tmp_path / "again" / "metrics.json").read_text())["student_test"]) == {"books"}


def test_distill_cli_user_errors(teacher_run, tmp_path):
    from adapterkit.cli import _register_all, app

    _register_all()
    for args, message in [(["--method", "nope", "--teacher", teacher_run], "--method must be one of"),
                          (["--method", "pkd"], "needs --teacher")]:
        result = runner.invoke(app, ["distill", "--student-layers", "1", "--output", str(tmp_path / "x"), *map(str, args)])
        assert isinstance(result.exception, AdapterkitError) and message in str(result.exception)


def test_distill_off_a_terminal_prints_progress_lines(teacher_run, tmp_path, monkeypatch):
    """Issue 20: distillation was silent for minutes in a log; off a terminal it prints plain lines."""
    monkeypatch.setenv("ADAPTERKIT_PROGRESS_EVERY", "0")  # a line every step
    result = _cli("distill", "--teacher", teacher_run, "--student-layers", 1, "--method", "vanilla",
                  "--output", tmp_path / "s", "--epochs", 1, "--train-limit", 16, "--batch-size", 8)
    assert result.exit_code == 0, result.output
    err = result.stderr.splitlines()
    lines = [line for line in err if line.startswith("distill (vanilla): step ")]
    assert [line.split()[3] for line in lines[:2]] == ["1/2", "2/2"] and all("loss " in line for line in lines)


def test_prediction_passes_report_progress(tiny_bert_dir, monkeypatch, capsys):
    """The teacher-logit and dev passes of a distillation (minutes on CoLA) print lines too."""
    from adapterkit.backbone import load_model
    from adapterkit.toolkit.scoring import predict_logits as predict

    monkeypatch.setenv("ADAPTERKIT_PROGRESS_EVERY", "0")
    model = load_model(str(tiny_bert_dir), num_labels=2)
    rows = [{"input_ids": [101, 2000 + i, 102], "attention_mask": [1, 1, 1], "labels": 0} for i in range(12)]
    logits = predict(model, rows, 0, batch_size=4, title="teacher logits")
    assert logits.shape == (12, 2) and not logits.requires_grad
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[3] for line in lines] == ["1/3", "2/3", "3/3"] and lines[-1].endswith("done")
    assert all(line.startswith("teacher logits: step ") for line in lines)


@pytest.mark.parametrize("name", ["kd", "metakd"])
def test_distillation_algorithms_refuse_unknown_options(name):
    from adapterkit.transfer.registry import TransferSpec, run_algorithm

    spec = TransferSpec(source=["dvd"], target="books", quick=True, options={"temprature": 2.0})
    with pytest.raises(AdapterkitError, match=r"unknown option\(s\) \['temprature'\] for " + name):
        run_algorithm(name, spec)


def test_distill_cli_takes_method_names_from_the_registry():
    from adapterkit.cli.distill import distill as distill_command
    from adapterkit.transfer.kd_losses import KD_METHODS, register_kd_method, vanilla_loss

    register_kd_method("mine_for_test")(vanilla_loss)
    try:
        with pytest.raises(AdapterkitError, match="metakd, mine_for_test, pkd"):
            distill_command(student_layers=1, output="/nonexistent/x", method="bogus")
    finally:
        KD_METHODS.pop("mine_for_test")
