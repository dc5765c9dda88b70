"""Crash-consistent checkpoints: --resume recovers the newest complete checkpoint from a crash at
any point of the swap; a resumed run equals an uninterrupted one (dropout on); train.log never
repeats; a resume with other settings or truncated weights is one clear error."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

import adapterkit.io.checkpoint as ck
from adapterkit.config import BottleneckConfig
from adapterkit.errors import AdapterkitError
from adapterkit.training import TrainConfig, train


class Crash(Exception):
    pass


def _parts(value: float):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.fill_(value)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return model, optimizer, scheduler


def _save(path, epoch):
    model, optimizer, scheduler = _parts(float(epoch))
    ck.save_checkpoint(path, model, optimizer, scheduler, False, {"epoch": epoch, "step": 5 * (epoch + 1), "history": []})


def _recovered_epoch(path):
    if ck.recover_checkpoint(path) is None:
        return None
    model, optimizer, scheduler = _parts(-1.0)
    progress = ck.load_checkpoint(path, model, optimizer, scheduler, False)
    assert model[0].weight.flatten()[0].item() != -1.0
    return progress["epoch"]


# The calls of one save, in order; a crash (kill) can come before any of them.
STEPS = ["_remove", "_save_tensors", "write_json", "fsync_dir", "replace"]


def _calls_of_one_save(tmp_path, monkeypatch) -> int:
    count = [0]
    for name in STEPS:
        target = os if name == "replace" else ck
        original = getattr(target, name)

        def counted(*a, _original=original, **k):
            count[0] += 1
            return _original(*a, **k)
        monkeypatch.setattr(target, name, counted)
    _save(tmp_path / "probe" / "checkpoint", 0)
    _save(tmp_path / "probe" / "checkpoint", 1)
    monkeypatch.undo()
    return count[0]


def test_a_crash_at_any_point_of_the_swap_keeps_the_newest_complete_checkpoint(tmp_path, monkeypatch):
    total = _calls_of_one_save(tmp_path, monkeypatch)
    assert total > 10
    outcomes = set()
    for k in range(total + 1):
        path = tmp_path / f"run{k}" / "checkpoint"
        path.parent.mkdir()
        _save(path, 0)
        count = [0]
        with monkeypatch.context() as m:
            for name in STEPS:
                target = os if name == "replace" else ck
                original = getattr(target, name)

                def crashing(*a, _original=original, **kw):
                    count[0] += 1
                    if count[0] > k:
                        raise Crash
                    return _original(*a, **kw)
                m.setattr(target, name, crashing)
            try:
                _save(path, 1)
            except Crash:
                pass
        epoch = _recovered_epoch(path)
        assert epoch in (0, 1), (k, sorted(os.listdir(path.parent)))
        outcomes.add(epoch)
        assert sorted(os.listdir(path.parent)) == ["checkpoint"], k  # one folder left, nothing stale
        _save(path, 2)  # and saving goes on from there
        assert _recovered_epoch(path) == 2
    assert outcomes == {0, 1}


@pytest.mark.parametrize("present, expected", [
    ({"checkpoint.old": 0, "checkpoint.tmp": 1}, 1),  # between the two renames
    ({"checkpoint": 0, "checkpoint.tmp": 1}, 1),  # before the first rename
    ({"checkpoint": 1, "checkpoint.old": 0}, 1),  # before the old one was removed
    ({"checkpoint.old": 0}, 0),
    ({"checkpoint": 0, "checkpoint.tmp": "no state"}, 0),
    ({"checkpoint": 0, "checkpoint.tmp": "truncated"}, 0),
    ({"checkpoint.tmp": "no state"}, None),
])
def test_each_named_crash_state_recovers(tmp_path, present, expected):
    for name, what in present.items():
        _save(tmp_path / "scratch" / name, what if isinstance(what, int) else 1)
        os.replace(tmp_path / "scratch" / name, tmp_path / name)
        if what == "no state":
            (tmp_path / name / "state.json").unlink()
        elif what == "truncated":
            data = (tmp_path / name / "weights.safetensors").read_bytes()
            (tmp_path / name / "weights.safetensors").write_bytes(data[:-3])
    assert _recovered_epoch(tmp_path / "checkpoint") == expected


def _config(tiny_bert_dir, glue_dir, out, **kw):
    settings = dict(epochs=2, batch_size=8, max_seq_len=32, seed=3, adapter=BottleneckConfig(bottleneck_dim=4)) | kw
    return TrainConfig(task="rte", model=str(tiny_bert_dir), data_dir=str(glue_dir), output=str(out), **settings)


def _weights(out):
    return load_file(str(out / "adapterkit_weights.safetensors"))


@pytest.mark.parametrize("where", [pytest.param("mid-epoch", marks=pytest.mark.slow), "in the checkpoint swap"])
def test_resume_after_a_kill_in_epoch_2_equals_the_uninterrupted_run(tiny_bert_dir, glue_dir, tmp_path, monkeypatch, where):
    from adapterkit.loop import LocalRunner

    whole = train(_config(tiny_bert_dir, glue_dir, tmp_path / "whole"), progress=False, log=lambda *_: None)
    out = tmp_path / "killed"
    with monkeypatch.context() as m:
        if where == "mid-epoch":
            step, calls = LocalRunner.step, [0]

            def killed(self, batch):
                calls[0] += 1
                if calls[0] == 8:  # 5 steps per epoch: inside epoch 2
                    raise KeyboardInterrupt
                return step(self, batch)
            m.setattr(LocalRunner, "step", killed)
        else:
            replace, calls = os.replace, [0]

            def killed(src, dst):
                if str(src).endswith("checkpoint.tmp"):
                    calls[0] += 1
                    if calls[0] == 2:  # epoch 2's swap, after checkpoint -> checkpoint.old
                        raise KeyboardInterrupt
                return replace(src, dst)
            m.setattr(ck.os, "replace", killed)
        with pytest.raises(KeyboardInterrupt):
            train(_config(tiny_bert_dir, glue_dir, out), progress=False, log=lambda *_: None)
    resumed = train(_config(tiny_bert_dir, glue_dir, out, resume=True), progress=False, log=lambda *_: None)
    assert [h["train_loss"] for h in resumed["epochs"]] == [h["train_loss"] for h in whole["epochs"]]
    assert [h["dev"] for h in resumed["epochs"]] == [h["dev"] for h in whole["epochs"]]
    a, b = _weights(tmp_path / "whole"), _weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = (out / "train.log").read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1", "epoch 2"]


def test_resume_with_other_settings_or_truncated_weights_is_one_clear_error(tiny_bert_dir, glue_dir, tmp_path):
    out = tmp_path / "run"
    train(_config(tiny_bert_dir, glue_dir, out, epochs=1), progress=False, log=lambda *_: None)
    settings = (out / "run_config.json").read_text()
    other = _config(tiny_bert_dir, glue_dir, out, resume=True)
    other.adapter = BottleneckConfig(bottleneck_dim=8)
    with pytest.raises(AdapterkitError, match="settings the run started with"):
        train(other, progress=False, log=lambda *_: None)
    assert (out / "run_config.json").read_text() == settings  # nothing rewritten
    weights = out / "checkpoint" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(AdapterkitError, match="not a safetensors file|no complete checkpoint"):
        ck.load_checkpoint(out / "checkpoint", *_parts(0.0), False)
