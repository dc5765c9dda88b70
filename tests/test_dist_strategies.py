"""Each strategy's first steps on 4 gloo processes (2 nodes x 2) match one process on the same
global batch; frozen parameters get no gradients; a saved adapter loads in one process."""
from __future__ import annotations

import json

import pytest
import torch
import transformers as T
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import adapterkit as ak
from adapterkit.dist.local import run_local
from adapterkit.dist.strategies import DistConfig, wrap_for_strategy
from adapterkit.dist.strategies.pipeline import plan_stages
from adapterkit.errors import AdapterkitError

GLOBAL_BATCH, STEPS, LR = 8, 2, 0.5


def tiny_bert(adapter: bool = True, sharing=1, layers: int = 4):
    config = T.BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3, pad_token_id=0,
    )
    torch.manual_seed(0)
    model = T.BertForSequenceClassification(config)
    if adapter:
        ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=8, sharing=sharing))
        ak.train_adapter(model, "a")
        with torch.no_grad():  # move off the identity init so every adapter weight gets a gradient
            for i, p in enumerate(q for q in model.parameters() if q.requires_grad):
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
    return model


def dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 99, (GLOBAL_BATCH, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[::3, -2:] = 0  # some padding
    return TensorDataset(ids, mask, torch.randint(0, 3, (GLOBAL_BATCH,), generator=g))


def as_batch(ids, mask, labels) -> dict:
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def single_process(sharing=1):
    model = tiny_bert(sharing=sharing)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
    batch, losses = as_batch(*dataset().tensors), []
    for _ in range(STEPS):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return model, losses, state


def _train(rank: int, strategy: str, overrides: dict, out_dir: str, sharing: int):
    model = tiny_bert(sharing=sharing)
    run = wrap_for_strategy(model, strategy, DistConfig(**overrides))
    opt = torch.optim.SGD(run.parameters(), lr=LR)
    data = dataset()
    sampler = DistributedSampler(data, num_replicas=run.dp_size, rank=run.dp_rank, shuffle=False)
    loader = DataLoader(data, batch_size=GLOBAL_BATCH // run.dp_size, sampler=sampler)
    losses = []
    for _ in range(STEPS):
        for batch in loader:  # one batch per replica: this replica's shard of the global batch
            losses.append(run.step(as_batch(*batch)))
            frozen_with_grad = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
            opt.step()
            opt.zero_grad()
    state = run.trainable_state()
    logits = None
    with run.eval_model() as m:
        if m is not None:
            with torch.no_grad():
                logits = m(**as_batch(*dataset().tensors)).logits
    run.save_adapter("a", f"{out_dir}/adapter")
    run.write_stats(out_dir)
    return dict(losses=losses, state=state, frozen_with_grad=frozen_with_grad, n_local=len(run.parameters()),
                logits=logits)


CASES = {
    "ddp": ("ddp", {}, 1),
    # top-k during its dense warm-up must be exact: checks the residual plumbing in the hook
    "ddp-flat-bucketed-topk-warmup-sync": (
        "ddp", {"hierarchical": False, "bucket_mb": 0.002, "compression": "topk:0.01,warmup=5", "overlap": False}, 1),
    "fsdp": ("fsdp", {"hybrid": False}, 1),
    "fsdp-hybrid-2x2": ("fsdp", {"hybrid": True}, 1),
    "pipeline-gpipe-4-stages": ("pipeline", {"schedule": "gpipe", "microbatches": 4}, 1),
    "pipeline-1f1b": ("pipeline", {"schedule": "1f1b", "microbatches": 4, "stages": 4}, 1),
    "pipeline+ddp-2x2-shared": ("pipeline+ddp", {"schedule": "1f1b", "microbatches": 2}, 2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_strategy_matches_single_process(case, tmp_path):
    strategy, overrides, sharing = CASES[case]
    reference, ref_losses, ref_state = single_process(sharing)
    results = run_local(_train, 4, nnodes=2, args=(strategy, overrides, str(tmp_path), sharing))
    for r in results:
        assert r["losses"] == pytest.approx(ref_losses, abs=1e-5)
        assert not r["frozen_with_grad"]
    state = results[0]["state"]
    assert set(state) == set(ref_state)
    for name, value in ref_state.items():
        torch.testing.assert_close(torch.as_tensor(state[name]), value, atol=1e-5, rtol=0)
    if strategy.startswith("pipeline"):  # each stage optimises only its own share of the adapters
        assert sum(r["n_local"] for r in results) == len(ref_state) * (2 if strategy == "pipeline+ddp" else 1)

    # the adapter saved by rank 0 loads in one process and gives the trained model's outputs,
    # as does the model rank 0 evaluates with
    fresh = tiny_bert(adapter=False, sharing=sharing)
    ak.load_adapter(fresh, tmp_path / "adapter")
    batch = as_batch(*dataset().tensors)
    with torch.no_grad():
        expected = reference(**batch).logits
        torch.testing.assert_close(fresh(**batch).logits, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.as_tensor(results[0]["logits"]), expected, atol=1e-5, rtol=0)
    stats = json.loads((tmp_path / "comm_stats.json").read_text())
    assert stats["strategy"] == strategy and stats["world_size"] == 4
    if strategy in ("ddp", "pipeline+ddp"):
        assert stats["steps"] == STEPS and stats["per_step"]["cross_node_bytes"] > 0


def test_pipeline_stage_boundaries_respect_sharing():
    assert plan_stages(tiny_bert(sharing=1), 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert plan_stages(tiny_bert(sharing=2), 2) == [(0, 2), (2, 4)]
    assert plan_stages(tiny_bert(sharing=3, layers=6), 2) == [(0, 3), (3, 6)]
    assert plan_stages(tiny_bert(sharing=3), 2) == [(0, 3), (3, 4)]  # the only cut between groups
    with pytest.raises(AdapterkitError, match="shared adapter"):
        plan_stages(tiny_bert(sharing="all"), 2)


def test_shard_splits_a_global_batch_by_replica():
    from adapterkit.dist.run import DistRun

    batch = as_batch(*dataset().tensors)
    parts = [DistRun("ddp", None, None, DistConfig(), None, None, dp_rank=r, dp_size=3).shard(batch) for r in range(3)]
    assert [len(p["labels"]) for p in parts] == [3, 3, 2]
    torch.testing.assert_close(torch.cat([p["input_ids"] for p in parts]), batch["input_ids"])


def test_unknown_strategy_and_bad_config():
    with pytest.raises(AdapterkitError, match="unknown strategy"):
        wrap_for_strategy(torch.nn.Linear(2, 2), "zero3")
    with pytest.raises(ValueError):
        DistConfig(schedule="interleaved")
    with pytest.raises(ValueError):
        DistConfig(compression="topk:2")
