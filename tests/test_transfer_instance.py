"""Instance-based transfer on a tiny BERT: the selector's policy gradient, MGTL's immediate
rewards, Ruder & Plank's features and search, and ruder-plank / rtl / mgtl from the Python API
and the CLI (quick mode, Amazon reviews); the benchmark's --quick mode."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adapterkit.transfer import TransferSpec, run_algorithm
from adapterkit.transfer import similarity
from adapterkit.transfer.selector import Baseline, Selector, immediate_advantages, log_prob, reinforce_loss
from tests.test_transfer_feature import SOURCES, invoke, one_thread  # noqa: F401  (fixture: one torch thread)

INSTANCE = ("ruder-plank", "rtl", "mgtl")


def _spec(model, **kw):
    return TransferSpec(source=SOURCES, target="kitchen", target_shots=16, model=str(model), quick=True,
                        max_seq_len=48, **kw)


@pytest.mark.parametrize("action, reward, direction",
                         [(1.0, 1.0, +1), (1.0, -1.0, -1), (0.0, 1.0, -1), (0.0, -1.0, +1)])
def test_policy_gradient_makes_rewarded_actions_more_likely(action, reward, direction):
    torch.manual_seed(0)
    selector = Selector(5)
    states, actions = torch.randn(4, 5), torch.full((4,), action)
    before = selector(states).detach()
    selector.zero_grad()
    reinforce_loss(selector, states, actions, torch.tensor(reward)).backward()
    bias_grad = selector.net[-1].bias.grad.item()
    # d loss / d logit = -A (a - p): descent raises the selection logit iff the advantage favours a=1
    assert np.sign(-bias_grad) == direction
    with torch.no_grad():
        for p in selector.parameters():
            p -= 0.5 * p.grad
    after = selector(states)
    assert torch.all(torch.sign(after - before) == direction)


def test_log_prob_and_baseline():
    selector = Selector(3)  # zero last layer: p = sigmoid(1) for every state
    p = torch.sigmoid(torch.tensor(1.0))
    lp = log_prob(selector, torch.zeros(2, 3), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(lp, torch.stack([p.log(), (1 - p).log()]))
    baseline = Baseline(decay=0.5)
    assert baseline.advantage(2.0) == 2.0  # first reward: nothing to compare with
    assert baseline.advantage(4.0) == 2.0 and baseline.value == 3.0


def test_mgtl_immediate_reward_favours_keeping_target_like_examples():
    actions = torch.tensor([1.0, 1.0, 0.0, 0.0])
    p_target = torch.tensor([0.9, 0.2, 0.9, 0.2])
    adv = immediate_advantages(actions, p_target)
    assert adv.tolist() == pytest.approx([0.4, -0.3, -0.4, 0.3])
    # after one policy-gradient step, the target-like example (state 0) is kept more often
    torch.manual_seed(0)
    selector = Selector(2)
    states = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    opt = torch.optim.SGD(selector.parameters(), lr=1.0)
    for _ in range(20):
        opt.zero_grad()
        reinforce_loss(selector, states, actions, immediate_advantages(actions, p_target)).backward()
        opt.step()
    keep = selector(states[:2]).detach()
    assert keep[0] > 0.9 and keep[1] < 0.5


def test_ruder_plank_similarity_and_diversity_features():
    special = {101, 102}
    rows = [{"input_ids": [101, 5, 6, 7, 102]}, {"input_ids": [101, 5, 5, 5, 5, 102]}, {"input_ids": [101, 8, 9, 102]}]
    p = similarity.term_distributions(rows, 12, special)
    q = similarity.term_distributions(rows[:1], 12, special)[0]
    sim = similarity.similarity(p, q)  # js, renyi, cosine, euclidean, variational, bhattacharyya
    assert sim[0].tolist() == pytest.approx([0, 0, 1, 0, 0, 0], abs=1e-4)  # identical to the target
    assert sim[2, 0].item() == pytest.approx(np.log(2), abs=1e-5)  # disjoint: JS = log 2
    assert sim[2, 2].item() == 0 and sim[2, 4].item() == pytest.approx(2.0)
    words = torch.eye(12)  # every two different words are at cosine distance 1
    div = similarity.diversity(p, rows, words, special)  # types, ttr, entropy, simpson, renyi, quadratic
    assert div[0].tolist() == pytest.approx([3, 1, np.log(3), 1 / 3, np.log(3), 2 / 3], abs=1e-2)
    assert div[1].tolist() == pytest.approx([1, 0.25, 0, 1, 0, 0], abs=1e-4)


def test_bayes_search_beats_its_random_start():
    goal = np.array([0.5, -0.5, 0.25])
    objective = lambda w: -float(((w - goal) ** 2).sum())
    w, best, history = similarity.bayes_search(objective, 3, n_init=4, n_iter=8, seed=0, candidates=500)
    assert len(history) == 12 and best == max(history) == objective(w)
    assert best > max(history[:4]) and best > -0.2


@pytest.mark.parametrize("name", INSTANCE)
def test_instance_algorithm_runs_from_python_and_cli(name, tiny_bert_dir, tmp_path):
    result = run_algorithm(name, _spec(tiny_bert_dir))
    assert result["steps"] == 4  # that it learns: tests/test_transfer_learning.py
    if name == "ruder-plank":  # half of the 3 x 32 quick source rows kept, by score
        assert sum(result["kept"].values()) == 48 and set(result["weights"]) == set(similarity.FEATURES)
    else:  # quick: episodes of 2 steps -> one delayed reward within 4 steps
        assert len(result["delayed_rewards"]) == 1 and 0.0 < result["kept_fraction"] < 1.0
    out = tmp_path / name
    cli = invoke("transfer", "run", name, "--source", ",".join(SOURCES), "--target", "kitchen", "--target-shots", "16",
                 "--model", str(tiny_bert_dir), "--max-seq-len", "48", "--quick", "--output", str(out))
    assert cli.exit_code == 0, cli.output
    assert json.loads((out / "results.json").read_text())["test"] == result["test"]


def test_transfer_list_shows_every_algorithm():
    cli = invoke("transfer", "list")
    names = {line.split()[0] for line in cli.output.splitlines() if line.strip()}
    assert {"target-only", "source-only", "mixed", "sequential", "fs", "ss", "ss-adv", "drss", "drss-adv",
            *INSTANCE} <= names


@pytest.mark.slow  # 15-22 s: keeps the default run under 10 minutes
def test_benchmark_quick_mode_lays_out_both_tables(tiny_bert_dir, tmp_path, monkeypatch):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_transfer.py"
    monkeypatch.syspath_prepend(str(path.parent))  # as when run as `python3 benchmarks/bench_transfer.py`
    spec = importlib.util.spec_from_file_location("bench_transfer", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    text = bench.main(["--quick", "--model", str(tiny_bert_dir), "--targets", "kitchen", "--shots", "16", "--jobs", "1",
                       "--max-seq-len", "48", "--methods", "target-only,source-only,fs,ss,rtl",
                       "--log", str(tmp_path / "runs.jsonl")])
    assert "feature-based (table 8 layout)" in text and "instance-based (table 9 layout" in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"Tgt-Only", "Src-Only", "FS", "SS", "RTL", "DRSS", "MGTL"}
    assert rows["DRSS"].count("| - ") >= 4 and "± 0.0" in rows["FS"]  # not run -> "-"; one seed -> 0 spread


def _domain_file(path: Path, domains: dict[str, int]) -> Path:
    good, bad = ("great", "lovely", "works well"), ("awful", "broken", "waste of money")
    lines = []
    for domain, n in domains.items():
        for i in range(n):
            label = i % 2
            words = good if label else bad
            lines.append(json.dumps({"text": f"the {domain} item {i} is {words[i % 3]}", "label": label, "domain": domain}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_users_own_domains_from_a_file_run_from_the_cli(tiny_bert_dir, tmp_path):
    from adapterkit.data import add_domain_file, load_domain_splits

    path = _domain_file(tmp_path / "mine.jsonl", {"phones": 60, "cars": 40})
    assert add_domain_file(path) == ["cars", "phones"]
    splits = load_domain_splits("phones", seed=0)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [42, 6, 12]
    assert sorted(splits["test"]["label"]) == [0] * 6 + [1] * 6  # stratified
    out = tmp_path / "run"
    cli = invoke("transfer", "run", "fs", "--source", "phones", "--target", "cars", "--domain-file", str(path),
                 "--model", str(tiny_bert_dir), "--max-seq-len", "32", "--quick", "--output", str(out))
    assert cli.exit_code == 0, cli.output
    assert "domains cars, phones" in cli.output
    assert set(json.loads((out / "results.json").read_text())["test"]) == {"accuracy", "f1"}


def test_domain_file_errors_are_one_line(tmp_path):
    import subprocess
    import sys

    clash = _domain_file(tmp_path / "clash.jsonl", {"books": 20})
    missing = tmp_path / "no_domain.tsv"
    missing.write_text("text\tlabel\ngood\t1\n")
    for path, message in ((clash, "built-in domain"), (missing, "no domain"), (tmp_path / "nope.tsv", "nope.tsv")):
        proc = subprocess.run([sys.executable, "-m", "adapterkit.cli", "transfer", "run", "fs", "--source", "dvd",
                               "--target", "books", "--domain-file", str(path)], capture_output=True, text=True)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
