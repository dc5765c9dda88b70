"""Meta-learning over adapter weights (adapterkit.transfer.meta): mechanics on a tiny BERT."""
import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from adapterkit.cli import _register_all, app
from adapterkit.errors import AdapterkitError
from adapterkit.model import adapter_parameters, head_parameters
from adapterkit.transfer import TransferSpec, run_algorithm
from adapterkit.transfer.first_order import adapt, fomaml_gradient, reptile_update, task_loss
from adapterkit.transfer.meta import ADAPTER, MetaOptions, meta_learn, new_model
from adapterkit.transfer.meta_learners import LayerCritic, confusion_loss, forward_group, group_heads
from adapterkit.transfer.meta_tasks import MetaTask, load_meta_tasks
from adapterkit.transfer.typicality import typicality_scores, typicality_weights

_register_all()
ALGORITHMS = ("metaft", "metadtl", "reptile", "fomaml")


def _spec(model, **kw):
    base = dict(source=["dvd", "kitchen"], target="books", model=str(model), quick=True, max_seq_len=32, batch_size=8)
    return TransferSpec(**{**base, **kw})


@pytest.fixture(scope="module")
def amazon(tiny_bert_dir):
    from adapterkit.backbone import load_tokenizer

    spec = _spec(tiny_bert_dir)
    return spec, load_meta_tasks(spec, load_tokenizer(str(tiny_bert_dir)))


def _batch(task: MetaTask, rows: slice = slice(0, 8)) -> dict:
    from adapterkit.toolkit.batching import batches

    return batches(task.train[rows], 8, 0, seed=None)[0]


def _model(spec):
    model = new_model(spec, 2)
    model.eval()  # no head dropout: the functional and the module computations must agree exactly
    with torch.no_grad():  # a non-zero up-projection, so every adapter tensor gets gradients
        for name, p in adapter_parameters(model, ADAPTER).items():
            p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    return model


def _theta(model):
    return {**adapter_parameters(model, ADAPTER), **head_parameters(model)}


def _frozen_state(model):
    trainable = set(_theta(model))
    return {n: p.detach().clone() for n, p in model.named_parameters() if n not in trainable}


# --- typicality -------------------------------------------------------------------------------

def test_typicality_scores_follow_the_documented_formula():
    emb = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 0])
    groups = torch.tensor([0, 0, 1, 1])
    scores = typicality_scores(emb, labels, groups, alpha=0.25)
    p0, p1 = torch.tensor([1.0, 0.5]), torch.tensor([0.5, 0.5])  # class-0 prototypes of groups 0 and 1
    cos = torch.nn.functional.cosine_similarity
    expected = torch.stack([0.25 * cos(e, p0 if g == 0 else p1, dim=0) + 0.75 * cos(e, p1 if g == 0 else p0, dim=0)
                            for e, g in zip(emb, groups)])
    torch.testing.assert_close(scores, expected)


def test_typicality_weights_sum_to_each_groups_row_count_and_favour_typical_rows():
    gen = torch.Generator().manual_seed(0)
    centre = torch.tensor([3.0, 0.0, 0.0, 0.0])
    emb = centre + 0.3 * torch.randn(12, 4, generator=gen)
    emb[5] = torch.tensor([-1.0, 2.0, 0.0, 0.0])  # an outlier of group 0, class 1
    labels = torch.tensor([0, 1] * 6)
    groups = torch.tensor([0] * 7 + [1] * 5)
    for same_labels in (True, False):
        weights = typicality_weights(emb, labels, groups, alpha=0.5, same_labels=same_labels)
        assert weights.min() >= 0
        assert weights[:7].sum().item() == pytest.approx(7.0)
        assert weights[7:].sum().item() == pytest.approx(5.0)
        assert weights[5] == weights[:7].min()  # the outlier is the least typical row of its group


def test_negative_scores_are_clipped_and_an_all_zero_group_is_uniform():
    emb = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels, groups = torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 1, 1])
    scores = typicality_scores(emb, labels, groups, alpha=1.0)  # group 0's prototype is 0: cos 0
    weights = typicality_weights(emb, labels, groups, alpha=1.0)
    assert scores[:2].abs().max() < 1e-6
    assert weights.tolist() == pytest.approx([1.0, 1.0, 1.0, 1.0])


# --- first-order mechanics --------------------------------------------------------------------

def test_reptile_update_moves_the_initialisation_towards_the_adapted_weights_by_the_step(amazon):
    spec, tasks = amazon
    model = _model(spec)
    theta = _theta(model)
    theta0 = {n: p.detach().clone() for n, p in theta.items()}
    phi = adapt(model, theta, [_batch(tasks["dvd"]), _batch(tasks["dvd"], slice(8, 16))], inner_lr=0.1)
    assert all(torch.equal(theta[n], theta0[n]) for n in theta)  # adapting leaves theta alone
    reptile_update(theta, [phi], step_size=0.3)
    for name, p in theta.items():
        torch.testing.assert_close(p.detach(), theta0[name] + 0.3 * (phi[name] - theta0[name]))
    before = sum((theta0[n] - phi[n]).pow(2).sum() for n in theta).sqrt()
    after = sum((theta[n].detach() - phi[n]).pow(2).sum() for n in theta).sqrt()
    assert before > 0
    assert after.item() == pytest.approx(0.7 * before.item(), rel=1e-4)


def test_reptile_update_averages_several_tasks():
    theta = {"w": torch.tensor([1.0, 2.0])}
    reptile_update(theta, [{"w": torch.tensor([3.0, 2.0])}, {"w": torch.tensor([1.0, 6.0])}], step_size=0.5)
    assert theta["w"].tolist() == [1.5, 3.0]


def test_functional_inner_step_equals_sgd_on_the_module(amazon):
    spec, tasks = amazon
    model = _model(spec)
    theta = _theta(model)
    batch = _batch(tasks["kitchen"])
    phi = adapt(model, theta, [batch], inner_lr=0.05)
    loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 token_type_ids=batch["token_type_ids"], labels=batch["labels"]).loss
    grads = torch.autograd.grad(loss, list(theta.values()))
    for (name, p), g in zip(theta.items(), grads):
        torch.testing.assert_close(phi[name], p.detach() - 0.05 * g)


def test_fomaml_gradient_is_the_query_gradient_at_the_adapted_weights(amazon):
    spec, tasks = amazon
    model = _model(spec)
    theta = _theta(model)
    support, query = [_batch(tasks["dvd"])], _batch(tasks["dvd"], slice(8, 16))
    grads = fomaml_gradient(model, theta, [(support, query)], inner_lr=0.1)
    phi = adapt(model, theta, support, inner_lr=0.1)
    expected = torch.autograd.grad(task_loss(model, phi, query), list(phi.values()))
    for name, g in zip(phi, expected):
        torch.testing.assert_close(grads[name], g)
    assert any(g.abs().sum() > 0 for g in grads.values())


# --- MetaFT / Meta-DTL pieces ---------------------------------------------------------------

def test_confusion_trains_the_adapter_only_and_the_critic_only_from_detached_features(amazon):
    spec, tasks = amazon
    model = _model(spec)
    critic = LayerCritic(2, 32, 2)
    torch.nn.init.normal_(critic.weight)
    parts = [forward_group(model, _batch(tasks[n]), torch.ones(len(tasks[n].train))) for n in ("dvd", "kitchen")]
    adapter = list(adapter_parameters(model, ADAPTER).values())
    for mode in ("corrupt", "entropy"):
        fit_critic, confuse = confusion_loss(critic, parts, mode, torch.Generator().manual_seed(0))
        assert all(g is None for g in torch.autograd.grad(confuse, list(critic.parameters()), allow_unused=True))
        assert any(g.abs().sum() > 0 for g in torch.autograd.grad(confuse, adapter, retain_graph=True))
        assert all(g is None for g in torch.autograd.grad(fit_critic, adapter, allow_unused=True, retain_graph=True))


def test_entropy_confusion_is_minus_log_k_for_a_uniform_critic(amazon):
    spec, tasks = amazon
    model = _model(spec)
    parts = [forward_group(model, _batch(tasks[n]), torch.ones(32)) for n in ("dvd", "kitchen", "books")]
    fit_critic, confuse = confusion_loss(LayerCritic(2, 32, 3), parts, "entropy", torch.Generator())
    assert confuse.item() == pytest.approx(-torch.log(torch.tensor(3.0)).item(), abs=1e-6)
    assert fit_critic.item() == pytest.approx(torch.log(torch.tensor(3.0)).item(), abs=1e-6)


def test_group_heads_resize_the_output_layer_and_copy_the_rest(amazon):
    spec, _ = amazon
    model = _model(spec)
    heads = group_heads(model, [3, 2], seed=0)
    assert heads[0]["classifier.weight"].shape == (3, 32) and heads[1]["classifier.bias"].shape == (2,)
    torch.testing.assert_close(heads[0]["bert.pooler.dense.weight"], model.bert.pooler.dense.weight.detach())
    assert heads[0]["bert.pooler.dense.weight"] is not model.bert.pooler.dense.weight


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_meta_training_changes_the_adapter_and_never_the_backbone(amazon, algorithm):
    spec, tasks = amazon
    model = new_model(spec, 2)
    frozen = _frozen_state(model)
    adapter0 = {n: p.detach().clone() for n, p in adapter_parameters(model, ADAPTER).items()}
    info, includes_head = meta_learn(algorithm, model, [tasks["dvd"], tasks["kitchen"]], spec,
                                     MetaOptions(meta_steps=2, inner_steps=2), pad_id=0)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert any(not torch.equal(p, adapter0[n]) for n, p in adapter_parameters(model, ADAPTER).items())
    assert includes_head == (algorithm != "metadtl")
    if algorithm in ("metaft", "metadtl"):
        assert len(info["history"]["task"]) == 2
        assert {k: round(v["sum"]) for k, v in info["weights"].items()} == {"dvd": 32, "kitchen": 32}


def test_uniform_weighting_gives_meta_fit_every_row_weight_one(amazon, monkeypatch):
    from adapterkit.transfer import meta_learners as ml

    spec, tasks = amazon
    seen = {}

    def record_weights(model, params, rows, weights, **kw):
        seen["w"] = weights
        return {}

    monkeypatch.setattr(ml, "meta_fit", record_weights)
    for weighting in ("typicality", "uniform"):
        info, _ = meta_learn("metaft", new_model(spec, 2), [tasks["dvd"], tasks["kitchen"]], spec,
                             MetaOptions(meta_steps=1, weighting=weighting), pad_id=0)
        ones = all(torch.equal(w, torch.ones(len(t.train))) for w, t in zip(seen["w"], [tasks["dvd"], tasks["kitchen"]]))
        assert ones == (weighting == "uniform")
        assert (info["weights"]["dvd"]["max"] == 1.0) == (weighting == "uniform")  # the summary tells what was used


def test_metaft_refuses_tasks_with_another_number_of_classes(amazon):
    spec, tasks = amazon
    three = MetaTask("three", 3, tasks["dvd"].train, [], [])
    with pytest.raises(AdapterkitError, match="metadtl"):
        meta_learn("metaft", new_model(spec, 2), [tasks["kitchen"], three], spec, MetaOptions(), pad_id=0)


def test_options_are_validated():
    with pytest.raises(AdapterkitError, match="unknown option.*for meta-learning"):
        MetaOptions.from_options({"meta_stesp": 3})
    with pytest.raises(AdapterkitError, match="alpha"):
        MetaOptions(alpha=1.5)
    with pytest.raises(AdapterkitError, match="inner_steps"):
        MetaOptions(inner_steps=0)
    with pytest.raises(AdapterkitError, match="weighting"):
        MetaOptions(weighting="typical")


# --- end to end: Python, CLI, --init-adapter ----------------------------------------------------

def test_metadtl_from_python_on_glue_tasks_with_their_own_heads(tiny_bert_dir, glue_dir, tmp_path):
    spec = _spec(tiny_bert_dir, source=["mrpc", "cola"], target="rte", data_dir=str(glue_dir), output=str(tmp_path),
                 options={"meta_steps": 2})
    result = run_algorithm("metadtl", spec)
    assert set(result["test"]) >= {"accuracy"}  # that it learns: tests/test_transfer_learning.py
    relations = result["meta"]["relations"]
    assert relations["classes"] == ["mrpc:0", "mrpc:1", "cola:0", "cola:1"]
    assert torch.tensor(relations["cosine"]).diagonal().tolist() == pytest.approx([1.0] * 4, abs=1e-5)
    assert not (tmp_path / "meta_adapter" / "adapterkit_head.safetensors").exists()  # the target's head is new
    assert (tmp_path / "adapter" / "adapterkit_head.safetensors").exists()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_runs_from_the_cli(tiny_bert_dir, glue_dir, tmp_path, algorithm):
    where = (["--source", "mrpc,cola", "--target", "rte", "--data-dir", glue_dir] if algorithm == "metadtl"
             else ["--source", "dvd,kitchen", "--target", "books"])
    args = ["transfer", "run", algorithm, *where, "--model", tiny_bert_dir, "--quick", "--max-seq-len", 32,
            "--output", tmp_path, "-o", "meta_steps=2", "-o", "inner_steps=2"]
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["algorithm"] == algorithm and f"accuracy {saved['test']['accuracy']:.4f}" in result.output
    assert saved["spec"]["options"] == {"meta_steps": 2, "inner_steps": 2}
    assert (tmp_path / "meta_adapter" / "adapterkit_config.json").exists()


def test_cli_stops_on_a_bad_option_with_a_user_error(tiny_bert_dir):
    args = ["transfer", "run", "reptile", "--source", "dvd", "--target", "books", "--model", str(tiny_bert_dir),
            "--quick", "-o", "step_size=-1"]
    result = CliRunner().invoke(app, args)  # `adapterkit` (cli.main) prints an AdapterkitError as one line
    assert isinstance(result.exception, AdapterkitError)
    assert str(result.exception) == "option step_size must be > 0, got -1"


def test_saved_meta_adapter_starts_adapterkit_train(tiny_bert_dir, glue_dir, tmp_path):
    from adapterkit.backbone import load_model
    from adapterkit.io import load_adapter

    run_algorithm("reptile", _spec(tiny_bert_dir, output=str(tmp_path / "meta"), options={"meta_steps": 2}))
    start = tmp_path / "meta" / "meta_adapter"
    model = load_model(str(tiny_bert_dir), num_labels=2)
    load_adapter(model, start, name="sst2")  # what `adapterkit train --init-adapter` does
    weights, head = load_file(str(start / "adapterkit_weights.safetensors")), load_file(str(start / "adapterkit_head.safetensors"))
    loaded = model.adapterkit.adapters["sst2"].state_dict()
    assert set(loaded) == set(weights) and all(torch.equal(loaded[k], weights[k]) for k in weights)
    assert torch.equal(model.classifier.weight.detach(), head["classifier.weight"])
    args = ["train", "--task", "sst2", "--model", tiny_bert_dir, "--data-dir", glue_dir, "--output", tmp_path / "run",
            "--init-adapter", start, "--max-steps", 2, "--batch-size", 8, "--max-seq-len", 32, "--quiet"]
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"][-1]["step"] == 2
