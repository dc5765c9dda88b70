"""Trunk caching: the cached lower layers give the uncached logits, losses and trained weights
(fp32), with padding and reshuffled, length-varying batches; refusals; the on-disk store."""
import pytest
import torch

import adapterkit as ak
from adapterkit.errors import AdapterkitError
from adapterkit.loop import LocalRunner
from adapterkit.trunk_cache import TrunkCache
from tests.tiny_models import build

ROWS = 24


def _adapted(family="bert", top_n=2):
    model, _ = build(family)
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=8, top_n=top_n, init="houlsby"))
    ak.train_adapter(model, "a")
    model.eval()  # no dropout anywhere: both paths must compute the same function
    return model


def _rows(seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 12, (ROWS,), generator=g).tolist()
    return [torch.randint(3, 99, (n,), generator=g) for n in lengths], torch.randint(0, 2, (ROWS,), generator=g)


def _batch(ids, labels, index):
    longest = max(len(ids[i]) for i in index)
    input_ids = torch.zeros(len(index), longest, dtype=torch.long)  # pad id 0, right padding
    mask = torch.zeros_like(input_ids)
    for j, i in enumerate(index):
        input_ids[j, :len(ids[i])], mask[j, :len(ids[i])] = ids[i], 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels[index]}


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_cached_logits_equal_the_full_forward_with_padding(family):
    model = _adapted(family)
    ids, labels = _rows()
    batch = _batch(ids, labels, list(range(8)))
    cache = TrunkCache(model)
    assert cache.start == 2  # top 2 of 4 layers adapted
    with torch.no_grad():
        full = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        first = cache.logits(batch)
        again = cache.logits(batch)
    torch.testing.assert_close(first, full, rtol=1e-5, atol=1e-6)
    assert torch.equal(again, first) and cache.hits == 8 and cache.misses == 8


def test_training_with_the_cache_matches_training_without_it():
    ids, labels = _rows()
    results = {}
    for cached in (False, True):
        model = _adapted()
        runner = LocalRunner(model, trunk_cache=TrunkCache(model) if cached else None)
        optimizer = torch.optim.AdamW(runner.parameters(), lr=1e-2)
        losses = []
        for epoch in range(3):  # a new order, new batch compositions and paddings every epoch
            order = torch.randperm(ROWS, generator=torch.Generator().manual_seed(epoch)).tolist()
            for start in range(0, ROWS, 6):
                losses.append(runner.step(_batch(ids, labels, order[start:start + 6])))
                runner.optimizer_step(optimizer)
                optimizer.zero_grad()
        results[cached] = losses, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        if cached:
            assert runner.trunk_cache.misses == ROWS and runner.trunk_cache.hits == 2 * ROWS  # computed once
    (plain_losses, plain), (cached_losses, cached) = results[False], results[True]
    assert cached_losses == pytest.approx(plain_losses, abs=1e-5)
    assert plain_losses[-1] < plain_losses[0]  # it trained
    for name in plain:
        torch.testing.assert_close(cached[name], plain[name], rtol=1e-4, atol=1e-5)


def test_states_spill_to_disk_beyond_the_memory_budget(tmp_path):
    model = _adapted()
    ids, labels = _rows()
    batch = _batch(ids, labels, list(range(8)))
    memory, disk = TrunkCache(model), TrunkCache(model, memory_mb=0, folder=tmp_path)
    with torch.no_grad():
        expected = memory.logits(batch)
        disk.logits(batch)
        assert len(disk.on_disk) == 8 and not disk.memory and len(list(tmp_path.iterdir())) == 1
        assert torch.equal(disk.logits(batch), expected)  # read back from the file
    disk.close()
    assert not list(tmp_path.iterdir())


def test_adapters_on_every_layer_leave_nothing_to_cache():
    with pytest.raises(AdapterkitError, match="no frozen trunk"):
        TrunkCache(_adapted(top_n=None))


def test_adapter_drop_moves_the_trunk_up_and_robust_drop_is_refused():
    from adapterkit.compose.drop import set_adapter_drop

    model = _adapted(top_n=None)  # adapters on all 4 layers
    set_adapter_drop(model, 3)
    cache = TrunkCache(model)
    assert cache.start == 3
    ids, labels = _rows()
    batch = _batch(ids, labels, list(range(6)))
    with torch.no_grad():
        torch.testing.assert_close(cache.logits(batch), model(input_ids=batch["input_ids"],
                                                              attention_mask=batch["attention_mask"]).logits,
                                   rtol=1e-5, atol=1e-6)
    set_adapter_drop(model, 0, robust_max=2)
    with pytest.raises(AdapterkitError, match="robust AdapterDrop"):
        TrunkCache(model)


def test_dropout_below_the_adapters_is_refused():
    model, _ = build("bert")
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=8, top_n=2))
    ak.train_adapter(model, "a", backbone_dropout=True)
    with pytest.raises(AdapterkitError, match="uses dropout"):
        TrunkCache(model)


def _train_cli(tiny_bert_dir, glue_dir, out, *extra):
    import json

    from typer.testing import CliRunner

    from adapterkit.cli import _register_all, app

    _register_all()
    args = ["train", "--task", "sst2", "--model", tiny_bert_dir, "--data-dir", glue_dir, "--output", out,
            "--epochs", 2, "--batch-size", 8, "--max-seq-len", 32, "--bottleneck", 8, "--lr", 5e-3, "--layers", "top1",
            "--quiet", *extra]
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exit_code != 0:
        return result
    return json.loads((out / "metrics.json").read_text())


def test_cli_trunk_cache_trains_the_same_adapter(tiny_bert_dir, glue_dir, tmp_path):
    from safetensors.torch import load_file

    plain = _train_cli(tiny_bert_dir, glue_dir, tmp_path / "plain")
    cached = _train_cli(tiny_bert_dir, glue_dir, tmp_path / "cached", "--trunk-cache")
    assert [e["dev"] for e in cached["epochs"]] == [e["dev"] for e in plain["epochs"]]
    assert [e["train_loss"] for e in cached["epochs"]] == pytest.approx([e["train_loss"] for e in plain["epochs"]],
                                                                        abs=1e-5)
    files = sorted(p.relative_to(tmp_path / "plain") for p in (tmp_path / "plain").rglob("*.safetensors"))
    assert files
    for path in files:
        cached_weights = load_file(tmp_path / "cached" / path)
        for key, value in load_file(tmp_path / "plain" / path).items():
            torch.testing.assert_close(cached_weights[key], value, rtol=1e-4, atol=1e-5)
    assert not list((tmp_path / "cached").glob("trunk-cache/*"))  # nothing left on disk
    refused = _train_cli(tiny_bert_dir, glue_dir, tmp_path / "full", "--trunk-cache", "--full-finetune")
    # refused before any work (here by the --full-finetune check on adapter options, which comes first)
    assert isinstance(refused.exception, AdapterkitError) and "--full-finetune" in str(refused.exception)
    assert not (tmp_path / "full").exists()
