"""Stock transformers.Trainer on a model with an adapter: slim checkpoints, best model restored."""
import pytest
import torch
from safetensors.torch import load_file

import adapterkit as ak
from tests.tiny_models import build

transformers = pytest.importorskip("transformers")


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, n=32, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(3, 99, (n, 8), generator=g)
        self.labels = (self.ids[:, 0] > 50).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": self.labels[i]}


def test_trainer_checkpoints_hold_only_adapter_and_head(tmp_path):
    model, _ = build("bert")
    ak.add_adapter(model, "task", ak.BottleneckConfig(bottleneck_dim=8, sharing=2))
    ak.train_adapter(model, "task")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=8, learning_rate=5e-3,
        eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
        load_best_model_at_end=True, metric_for_best_model="eval_loss", report_to=[],
        use_cpu=True, logging_steps=100, disable_tqdm=True,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Pairs(), eval_dataset=_Pairs(16, seed=1))
    trainer.train()

    checkpoints = sorted(tmp_path.glob("checkpoint-*"))
    assert checkpoints, "no checkpoint written"
    for ckpt in checkpoints:
        keys = set(load_file(str(ckpt / "model.safetensors")))
        assert keys == trainable, "checkpoint must hold exactly the adapter and head weights"
    best = load_file(str(__import__("pathlib").Path(trainer.state.best_model_checkpoint) / "model.safetensors"))
    state = model.state_dict()
    for key, value in best.items():
        assert torch.equal(state[key], value), f"{key} not restored from the best checkpoint"
    assert any(k.startswith("adapterkit.adapters.task.") for k in best)
