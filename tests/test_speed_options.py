"""--gradient-checkpointing and --compile: the same gradients and losses as the plain step, less
memory kept for backward with checkpointing."""
import pytest
import torch

import adapterkit as ak
from adapterkit.speed import apply_speed_options


def _model(tiny_bert_dir, top_n=None):
    from adapterkit.backbone import load_model

    torch.manual_seed(0)
    model = load_model(str(tiny_bert_dir), num_labels=2)
    ak.add_adapter(model, "a", ak.BottleneckConfig(bottleneck_dim=8, top_n=top_n, init="houlsby"))
    ak.train_adapter(model, "a")
    return model


def _batch(length=24):
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(4, length, dtype=torch.long)
    mask[1, length // 2:] = 0  # padding in one row
    return {"input_ids": torch.randint(1000, 5000, (4, length), generator=g), "attention_mask": mask,
            "labels": torch.tensor([0, 1, 1, 0])}


def _grads_and_saved_bytes(model, batch):
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    model.train()
    torch.manual_seed(2)  # the head's dropout draws the same mask in both runs
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads, sum(seen.values())


@pytest.mark.parametrize("top_n", [None, 1])
def test_gradient_checkpointing_gives_the_same_gradients_with_less_saved(tiny_bert_dir, top_n):
    batch = _batch()
    plain = _model(tiny_bert_dir, top_n)
    checkpointed = apply_speed_options(_model(tiny_bert_dir, top_n), gradient_checkpointing=True)
    loss0, grads0, saved0 = _grads_and_saved_bytes(plain, batch)
    loss1, grads1, saved1 = _grads_and_saved_bytes(checkpointed, batch)
    assert loss1 == pytest.approx(loss0, abs=1e-6)
    assert grads0.keys() == grads1.keys() and len(grads0) > 0
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], rtol=1e-5, atol=1e-6)
    assert saved1 < 0.7 * saved0


def test_gradient_checkpointing_does_not_send_the_backward_below_the_adapters(tiny_bert_dir):
    model = apply_speed_options(_model(tiny_bert_dir, top_n=1), gradient_checkpointing=True)
    reached = []
    model.bert.encoder.layer[0].register_full_backward_hook(lambda *args: reached.append(True))
    model(**_batch()).loss.backward()
    assert not reached  # layer 0 has no adapter: no gradient flows through it


@pytest.mark.slow
def test_compiled_training_matches_eager(tiny_bert_dir):
    batch = _batch(16)
    losses = {}
    for compiled in (False, True):
        model = apply_speed_options(_model(tiny_bert_dir), compile=compiled)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        losses[compiled] = []
        torch.manual_seed(2)
        for _ in range(3):
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses[compiled].append(loss.item())
    assert losses[True] == pytest.approx(losses[False], rel=1e-4, abs=1e-5)
