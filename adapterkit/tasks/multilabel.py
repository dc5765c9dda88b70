"""multilabel: one text or a text pair -> any subset of N labels (sigmoid per label).

Labels in a file: a JSON list (JSONL, Parquet) or one cell split on , ; or | (CSV/TSV); an
empty cell is the empty set. A label is predicted when its sigmoid is >= the spec's threshold
(default 0.5). Main metric: micro F1; macro F1 and exact-set match are reported too.
"""
from __future__ import annotations

from adapterkit.tasks import sequence
from adapterkit.tasks.registry import register_task_type


@register_task_type
class Multilabel:
    name = "multilabel"
    head = "sequence"
    problem_type = "multi_label_classification"
    metric = "micro_f1"
    greater_is_better = True
    stratify_column = "label"  # stratified by label set

    def read(self, path, spec, notes):
        return sequence.read(path, spec, notes, multilabel=True)

    def read_inputs(self, path, spec):
        return sequence.read(path, spec, [], labelled=False)

    def encode(self, raw, tokenizer, spec, max_seq_len):
        return sequence.encode(raw, tokenizer, max_seq_len)

    def collator(self, pad_id):
        from adapterkit.data import PadCollator

        return PadCollator(pad_id, regression=True)  # float multi-hot labels (B, C)

    def evaluate(self, model, split, spec, tokenizer, batch_size):
        from adapterkit.tasks.metrics import multilabel_metrics

        probs = sequence.logits(model, split, tokenizer, batch_size).sigmoid().numpy()
        return multilabel_metrics(probs, split.rows["labels"], spec.threshold)

    def predict(self, model, split, spec, tokenizer, batch_size):
        probs = sequence.logits(model, split, tokenizer, batch_size).sigmoid()
        return [{"labels": [n for n, v in zip(spec.labels, p) if v >= spec.threshold],
                 "scores": {n: round(float(v), 6) for n, v in zip(spec.labels, p)}} for p in probs]
