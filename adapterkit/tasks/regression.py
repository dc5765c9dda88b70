"""regression: one text or a text pair -> one number (mean squared error loss)."""
from __future__ import annotations

from adapterkit.tasks import sequence
from adapterkit.tasks.registry import register_task_type


@register_task_type
class Regression:
    name = "regression"
    head = "sequence"
    problem_type = "regression"
    metric = "pearson"
    greater_is_better = True
    stratify_column = None

    def read(self, path, spec, notes):
        return sequence.read(path, spec, notes, multilabel=False, regression=True)

    def read_inputs(self, path, spec):
        return sequence.read(path, spec, [], labelled=False)

    def encode(self, raw, tokenizer, spec, max_seq_len):
        return sequence.encode(raw, tokenizer, max_seq_len)

    def collator(self, pad_id):
        from adapterkit.data import PadCollator

        return PadCollator(pad_id, regression=True)

    def evaluate(self, model, split, spec, tokenizer, batch_size):
        from adapterkit.tasks.metrics import regression_metrics

        scores = sequence.logits(model, split, tokenizer, batch_size)[:, 0].numpy()
        return regression_metrics(scores, split.rows["labels"])

    def predict(self, model, split, spec, tokenizer, batch_size):
        scores = sequence.logits(model, split, tokenizer, batch_size)[:, 0]
        return [{"score": float(s)} for s in scores]
