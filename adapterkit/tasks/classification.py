"""classification: one text or a text pair -> one of N classes (string or integer labels)."""
from __future__ import annotations

from adapterkit.tasks import sequence
from adapterkit.tasks.registry import register_task_type


@register_task_type
class Classification:
    name = "classification"
    head = "sequence"
    problem_type = "single_label_classification"
    metric = "accuracy"
    greater_is_better = True
    stratify_column = "label"

    def read(self, path, spec, notes):
        return sequence.read(path, spec, notes, multilabel=False, regression=False)

    def read_inputs(self, path, spec):
        return sequence.read(path, spec, [], labelled=False)

    def encode(self, raw, tokenizer, spec, max_seq_len):
        return sequence.encode(raw, tokenizer, max_seq_len)

    def collator(self, pad_id):
        from adapterkit.data import PadCollator

        return PadCollator(pad_id)

    def evaluate(self, model, split, spec, tokenizer, batch_size):
        from adapterkit.tasks.metrics import classification_metrics

        logits = sequence.logits(model, split, tokenizer, batch_size)
        return classification_metrics(logits.argmax(-1).numpy(), split.rows["labels"], len(spec.labels))

    def predict(self, model, split, spec, tokenizer, batch_size):
        logits = sequence.logits(model, split, tokenizer, batch_size)
        probs = logits.softmax(-1)
        out = []
        for p in probs:
            k = int(p.argmax())
            out.append({"label": spec.labels[k], "label_id": k, "score": float(p[k]),
                        "scores": {name: round(float(v), 6) for name, v in zip(spec.labels, p)}})
        return out
