"""Feature-based transfer and baselines on a tiny BERT: gradient reversal, which adapters a
domain's batch reaches, the orthogonality and relationship terms, the frozen-prefix cache, and
every algorithm from the Python API and the CLI (quick mode, Amazon reviews)."""
import json

import pytest
import torch
from typer.testing import CliRunner

import adapterkit as ak
from adapterkit.model import adapter_plan
from adapterkit.transfer import TransferSpec, run_algorithm
from adapterkit.transfer.encoder import Encoder
from adapterkit.transfer.feature import SS_OPTIONS, Relationship, SharedPrivate, adapter_updates
from adapterkit.transfer.grl import DomainClassifier, grad_reverse, orthogonality
from adapterkit.transfer.kit import setup

SOURCES = ["books", "dvd", "electronics"]  # the benchmark's for kitchen: one data load serves every test
FEATURE = ("fs", "ss", "ss-adv", "drss", "drss-adv")
BASELINES = ("target-only", "source-only", "mixed", "sequential")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one thread is many times faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def invoke(*args):
    from adapterkit.cli import _register_all, app

    if not any(group.name == "transfer" for group in app.registered_groups):
        _register_all()
    return CliRunner().invoke(app, list(args))


def _spec(model, **kw):
    return TransferSpec(source=SOURCES, target="kitchen", target_shots=16, model=str(model), quick=True,
                        max_seq_len=48, **kw)


@pytest.fixture(scope="module")
def shared_private(tiny_bert_dir):
    """SS-Adv on the tiny model, adapters moved away from their identity init."""
    run, opts = setup(_spec(tiny_bert_dir), SS_OPTIONS)
    model = SharedPrivate(run, adversarial=True, relational=False, opts=opts)
    for name in ("shared", *model.private.values()):
        for p in ak.adapter_parameters(run.model, name).values():
            torch.nn.init.normal_(p, std=0.05)
    return model


def _grads(run, name):
    return [p.grad for p in ak.adapter_parameters(run.model, name).values()]


def test_grad_reverse_flips_discriminator_gradient_into_shared_adapter(tiny_bert_dir):
    run, _ = setup(_spec(tiny_bert_dir))
    run.add_adapters("shared")
    for p in ak.adapter_parameters(run.model, "shared").values():  # away from the zero init
        torch.nn.init.normal_(p, std=0.05)
    torch.manual_seed(0)
    critic = DomainClassifier(run.hidden, 3)
    batch = run.encoder.collate(run.target.train[:8])
    domain = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])

    def grads(reverse):
        run.model.zero_grad(set_to_none=True)
        critic.zero_grad(set_to_none=True)
        logits = critic(run.features(batch, ["shared"]), reverse=reverse)
        torch.nn.functional.cross_entropy(logits, domain).backward()
        return ([p.grad.clone() for p in ak.adapter_parameters(run.model, "shared").values()],
                [p.grad.clone() for p in critic.parameters()])

    plain_adapter, plain_critic = grads(None)
    reversed_adapter, reversed_critic = grads(0.5)
    assert sum(g.abs().sum() for g in plain_adapter) > 0
    for g, r in zip(plain_adapter, reversed_adapter):
        torch.testing.assert_close(r, -0.5 * g)  # the shared adapter is pushed the other way, scaled
    for g, r in zip(plain_critic, reversed_critic):
        torch.testing.assert_close(r, g)  # the classifier itself still learns to classify
    x = torch.ones(3, requires_grad=True)
    grad_reverse(x, 2.0).sum().backward()
    assert x.grad.tolist() == [-2.0, -2.0, -2.0]


def test_private_adapters_of_other_domains_get_no_gradient(shared_private):
    model, run = shared_private, shared_private.run
    run.model.zero_grad(set_to_none=True)
    model.loss("books", run.encoder.collate(run.data["books"].train[:8])).backward()
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(run, "shared"))
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(run, "private_books"))
    others = ("private_dvd", "private_electronics", "private_kitchen")
    assert all(g is None for name in others for g in _grads(run, name))
    assert run.heads["dvd"].weight.grad is None and run.heads["books"].weight.grad is not None
    assert all(p.grad is not None for p in model.classifier.parameters())
    assert all(p.grad is None for n, p in run.model.named_parameters() if not n.startswith("adapterkit."))


def test_orthogonality_penalty_on_per_site_adapter_updates(shared_private):
    run = shared_private.run
    names = ["shared", "private_books"]
    batch = run.encoder.collate(run.data["books"].train[:4])
    with adapter_updates(run, names) as updates:
        out = run.features(batch, names, "parallel")
    sites = adapter_plan(run.model, "shared").sites  # attn + ffn of both layers
    assert len(sites) == 4 and len(updates["shared"]) == len(updates["private_books"]) == 4
    assert updates["shared"][0].shape == (4, batch["attention_mask"].shape[1], run.hidden)
    assert out.shape == (4, run.hidden)
    s, p = torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [3.0, 1.0]])
    assert orthogonality(s, p).item() == 0.0  # S^T P = 0: nothing shared between the two spaces
    s = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    assert orthogonality(s, s).item() == pytest.approx(1.0)  # rows normalised: ||S^T S||_F^2 / B^2 = 2^2 / 4
    assert orthogonality(100 * s, s).item() == pytest.approx(1.0)  # scale-free


def test_relationship_matrix_follows_head_similarity(shared_private):
    run = shared_private.run
    domains = ["books", "dvd", "kitchen"]
    run.add_heads(*domains)
    with torch.no_grad():
        run.heads["books"].weight.copy_(torch.randn_like(run.heads["books"].weight))
        run.heads["dvd"].weight.copy_(run.heads["books"].weight * 1.1)
        run.heads["kitchen"].weight.copy_(torch.randn_like(run.heads["books"].weight))
        for d in domains:
            run.heads[d].bias.zero_()
    relation = Relationship(run, domains)
    w = relation.weights()
    assert relation.penalty().item() == pytest.approx(float((w.detach() ** 2).sum() * 3), rel=1e-5)  # Omega = I / 3
    relation.update()
    omega = relation.omega
    assert omega.trace().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.linalg.eigvalsh(omega).min() > 0
    assert omega[0, 1] > 3 * abs(omega[0, 2])  # books ~ dvd, kitchen unrelated
    expected = torch.trace(w @ torch.linalg.inv(omega) @ w.T)
    assert relation.penalty().item() == pytest.approx(expected.item(), rel=1e-4)


def test_frozen_prefix_cache_gives_the_full_forward(tiny_bert_dir):
    run, _ = setup(_spec(tiny_bert_dir, options={"top_n": 1}))
    assert run.encoder.split == 1 and "prefix" in run.target.test[0]
    run.add_adapters("a")
    for p in ak.adapter_parameters(run.model, "a").values():
        torch.nn.init.normal_(p, std=0.05)
    rows = run.target.test[:6]
    full = Encoder(run.model, run.tokenizer.pad_token_id)  # no cache: embeddings + both layers
    expected = full.features(full.collate(rows), ["a"])
    torch.testing.assert_close(run.features(run.encoder.collate(rows), ["a"]), expected, atol=1e-5, rtol=1e-5)
    expected.sum().backward()
    assert all(p.grad is not None for p in ak.adapter_parameters(run.model, "a").values())


@pytest.mark.parametrize("name", FEATURE + BASELINES)
def test_algorithm_runs_from_python_and_cli_with_the_same_result(name, tiny_bert_dir, tmp_path):
    result = run_algorithm(name, _spec(tiny_bert_dir))
    steps = {"mixed": 8, "sequential": 8}.get(name, 4)  # quick: 4 steps per phase
    assert result["steps"] == steps and result["algorithm"] == name
    assert set(result["test"]) == {"accuracy", "f1"}  # that it learns: tests/test_transfer_learning.py
    out = tmp_path / name
    cli = invoke("transfer", "run", name, "--source", ",".join(SOURCES), "--target", "kitchen", "--target-shots", "16",
                 "--model", str(tiny_bert_dir), "--max-seq-len", "48", "--quick", "--output", str(out))
    assert cli.exit_code == 0, cli.output
    assert f"{name}: accuracy {result['test']['accuracy']:.4f}" in cli.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["test"] == result["test"]  # same seed, same numbers, CLI or Python
    assert (out / "heads.safetensors").exists() and any((out / "adapters").iterdir())
    if name.startswith("drss"):
        omega = saved["relationship"]
        assert set(omega) == {*SOURCES, "kitchen"}
        assert sum(omega[d][d] for d in omega) == pytest.approx(1.0, abs=1e-3)


def test_unknown_option_is_a_clear_error(tiny_bert_dir):
    with pytest.raises(ak.AdapterkitError, match="unknown option"):
        run_algorithm("ss", _spec(tiny_bert_dir, options={"adv_wieght": 1.0}))
