"""A shared adapter stacked with per-domain private adapters, trained on two Amazon domains,
written only with the public API (no backbone code touched): the shape transfer algorithms use."""
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

import adapterkit as ak
from adapterkit.backbone import load_tokenizer
from adapterkit.data import PadCollator, amazon_splits, encode

DOMAINS = ("books", "kitchen")


def _batches(domain, tokenizer, n=64, batch_size=16):
    train = amazon_splits(domain, seed=0)["train"].select(range(n))
    train = train.rename_column("text", "text_a").remove_columns("domain")
    rows = encode(train, tokenizer, "sst2", max_seq_len=48)
    collate = PadCollator(tokenizer.pad_token_id)
    return [collate([rows[j] for j in range(i, i + batch_size)]) for i in range(0, n, batch_size)]


def _grads(model, name):
    return [p.grad for p in ak.adapter_parameters(model, name).values()]


def test_shared_plus_private_adapters_on_two_domains():
    tokenizer = load_tokenizer(None)
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=64))
    for name in ("shared", *DOMAINS):
        ak.add_adapter(model, name, ak.BottleneckConfig(bottleneck_dim=8, sharing=2), activate=False)
    data = {d: _batches(d, tokenizer) for d in DOMAINS}
    for name in ("shared", *DOMAINS):
        for p in ak.adapter_parameters(model, name).values():
            p.requires_grad_(True)
    params = [p for n in ("shared", *DOMAINS) for p in ak.adapter_parameters(model, n).values()]
    params += list(ak.head_parameters(model).values())
    for n, p in model.named_parameters():
        p.requires_grad_(any(p is q for q in params))
    optimizer = torch.optim.AdamW(params, lr=1e-2)

    def loss_on(domain, batch):
        ak.set_active(model, ["shared", domain])  # stack: shared feeds the private adapter
        return model(**batch).loss

    model.eval()  # no dropout: the loss comparison below is deterministic
    with torch.no_grad():
        before = {d: sum(loss_on(d, b).item() for b in data[d]) for d in DOMAINS}

    # one books batch: the shared and books adapters get gradients, kitchen's none
    optimizer.zero_grad()
    loss_on("books", data["books"][0]).backward()
    assert all(g is not None for g in _grads(model, "shared")) and all(g is not None for g in _grads(model, "books"))
    assert all(g is None for g in _grads(model, "kitchen"))
    optimizer.zero_grad(set_to_none=True)

    for _ in range(6):
        for step in range(len(data["books"])):
            for domain in DOMAINS:
                optimizer.zero_grad()
                loss_on(domain, data[domain][step]).backward()
                optimizer.step()
    with torch.no_grad():
        after = {d: sum(loss_on(d, b).item() for b in data[d]) for d in DOMAINS}
    for domain in DOMAINS:
        assert after[domain] < 0.8 * before[domain], (domain, before[domain], after[domain])
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
