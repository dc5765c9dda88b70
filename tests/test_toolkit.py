"""adapterkit.toolkit: the one batcher, pooling, adapters-off context, row-order collection and
schedule every loop and algorithm uses; and user errors reached through them are one line."""
from __future__ import annotations

import pytest
import torch

import adapterkit as ak
from adapterkit.cli import main
from adapterkit.toolkit.batching import batches, collate, pad
from adapterkit.toolkit.features import adapters_off, eval_mode, in_row_order, masked_mean, using_adapters
from adapterkit.toolkit.schedule import linear_warmup
from tests.tiny_models import build


def test_pad_and_collate():
    ids, mask = pad([[5, 6, 7], [8]], value=1)
    assert ids.tolist() == [[5, 6, 7], [8, 1, 1]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    states, mask = pad([torch.ones(2, 3), torch.ones(1, 3)])  # (T_i, H) tensors -> (B, T, H)
    assert states.shape == (2, 2, 3) and states[1, 1].abs().sum() == 0 and mask.tolist() == [[1, 1], [1, 0]]
    batch = collate([{"input_ids": [5, 6], "attention_mask": [1, 1], "labels": 1},
                     {"input_ids": [7], "attention_mask": [1], "labels": 0}], pad_id=3)
    assert batch["input_ids"].tolist() == [[5, 6], [7, 3]] and batch["attention_mask"].tolist() == [[1, 1], [1, 0]]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 0]


def test_collate_pads_token_labels_and_keeps_multi_hot_rows():
    """The label shapes of every task type, through the one collate (data.PadCollator calls it)."""
    from adapterkit.data import PadCollator

    rows = [{"input_ids": [5, 6, 7], "labels": [1, 2, 0]}, {"input_ids": [8], "labels": [2]}]
    tagged = collate(rows, pad_id=0, label_pad=-100)
    assert tagged["labels"].tolist() == [[1, 2, 0], [2, -100, -100]] and tagged["labels"].dtype == torch.long
    multi = collate([{"input_ids": [5], "labels": [1, 0, 1]}, {"input_ids": [6, 7], "labels": [0, 1, 0]}],
                    regression=True)
    assert multi["labels"].dtype == torch.float32 and multi["labels"].tolist() == [[1, 0, 1], [0, 1, 0]]
    for got, want in zip(PadCollator(0, label_pad=-100)(rows).values(), tagged.values()):
        assert torch.equal(got, want)


def test_batches_cover_every_row_once_in_a_seeded_order():
    rows = [{"input_ids": [i + 1] * (1 + i % 3), "labels": i % 2} for i in range(10)]
    ordered = batches(rows, 4)
    assert [b["_rows"] for b in ordered] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    shuffled = batches(rows, 4, seed=1)
    flat = [i for b in shuffled for i in b["_rows"]]
    assert sorted(flat) == list(range(10)) and flat != list(range(10))
    assert [b["_rows"] for b in batches(rows, 4, seed=1)] == [b["_rows"] for b in shuffled]


def test_masked_mean_ignores_padding_and_survives_empty_rows():
    hidden = torch.tensor([[[1.0], [3.0], [100.0]], [[5.0], [7.0], [9.0]]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    assert masked_mean(hidden, mask).tolist() == [[2.0], [0.0]]


def test_adapters_off_and_eval_mode_restore_even_after_an_error():
    model, _ = build("bert")
    ak.add_adapter(model, "a")
    ak.add_adapter(model, "b")
    ak.set_active(model, ["a", "b"], composition="parallel")
    model.train()
    with pytest.raises(RuntimeError):
        with adapters_off(model), eval_mode(model):
            assert ak.active_adapters(model) == [] and not model.training
            raise RuntimeError("boom")
    assert ak.active_adapters(model) == ["a", "b"] and model.adapterkit.composition == "parallel" and model.training


def test_a_registered_composition_survives_a_temporary_activation():
    """using_adapters / adapters_off set the composition aside (not closed): a split composition
    (which holds a hook) computes the same after the block as before it."""
    model, inputs = build("bert")
    for name in ("a", "b"):
        ak.add_adapter(model, name, ak.BottleneckConfig(bottleneck_dim=4))
        for p in ak.adapter_parameters(model, name).values():
            torch.nn.init.normal_(p, std=0.2)
    ak.set_active(model, ["a", "b"], composition="split", splits=[3])
    with torch.no_grad():
        before = model(**inputs).logits
        with using_adapters(model, ["b"]):
            assert ak.active_adapters(model) == ["b"]
            only_b = model(**inputs).logits
        with adapters_off(model):
            bare = model(**inputs).logits
        after = model(**inputs).logits
    assert torch.equal(after, before) and model.adapterkit.composition == "split"
    assert not torch.allclose(only_b, before) and not torch.allclose(bare, before)


def test_in_row_order_scatters_batches_back():
    batched = [{"x": torch.tensor([[2.0], [0.0]]), "_rows": [2, 0]}, {"x": torch.tensor([[1.0]]), "_rows": [1]}]
    assert in_row_order(batched, lambda b: b["x"], 3).squeeze(-1).tolist() == [0.0, 1.0, 2.0]


def test_linear_warmup_rises_then_falls_to_zero():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule, seen = linear_warmup(optimizer, warmup=2, total=6), []
    for _ in range(6):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert seen == pytest.approx([1 / 3, 2 / 3, 1.0, 0.75, 0.5, 0.25])


@pytest.mark.parametrize("args,match", [
    (["train", "--task", "rte", "--max-seq-len", "1"], "max_seq_len must be >= 2"),
    (["train", "--task", "rte", "--compression", "bogus"], "--compression 'bogus'"),
    (["distill", "--student-layers", "1", "--output", "{tmp}/s", "--method", "bogus"], "--method must be one of"),
    (["transfer", "run", "fs", "--target", "books", "--source", "dvd", "--sharing", "0"], "sharing"),
    (["transfer", "run", "fs", "--target", "books", "--source", "dvd", "-o", "tpo_n=2"], "unknown option(s) ['tpo_n']"),
])
def test_user_errors_are_one_line(capsys, tmp_path, args, match):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([a.replace("{tmp}", str(tmp_path)) for a in args])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert match in err, err
