"""Train a tagging (NER) adapter on CoNLL-style files with the stock Hugging Face Trainer.

    python examples/trainer_token_classification.py --train ../shared/data/conll2003/train.txt \
        --validation ../shared/data/conll2003/dev.txt --max-steps 200

adapterkit.tasks reads the files (IOB1 is detected and trained as IOB2), aligns each word's tag
with its first sub-token and pads labels with -100; the Trainer runs the loop. Checkpoints hold
only the adapter and the head; the adapter is saved with its head metadata (tag names), so
`adapterkit predict --adapter OUTPUT/adapter` tags new text.
"""
import argparse

import numpy as np
from transformers import Trainer, TrainingArguments

import adapterkit as ak
from adapterkit.backbone import load_tokenizer
from adapterkit.tasks import DataFiles, load_task_files, model_for
from adapterkit.tasks.metrics import entity_metrics

parser = argparse.ArgumentParser()
parser.add_argument("--train", required=True)
parser.add_argument("--validation", required=True)
parser.add_argument("--max-steps", type=int, default=200)
parser.add_argument("--output", default="runs/trainer-ner")
parser.add_argument("--model", default="all-MiniLM-L6-v2", help="backbone name or folder")
args = parser.parse_args()

tokenizer = load_tokenizer(args.model)
task = load_task_files("token-classification", DataFiles(train=args.train, validation=args.validation),
                       tokenizer, max_seq_len=128)
print("\n".join(task.notes))
model = model_for(task.spec, args.model)  # token-classification head, tag names in id2label
ak.add_adapter(model, "ner", ak.BottleneckConfig(bottleneck_dim=64, sharing=3))
ak.train_adapter(model, "ner")


def compute_metrics(prediction):
    """Entity-level scores over words (first sub-tokens: the positions whose label is not -100)."""
    predicted, gold = [], []
    for logits, labels in zip(prediction.predictions, prediction.label_ids):
        keep = labels != -100
        predicted.append([task.spec.labels[k] for k in np.argmax(logits, -1)[keep]])
        gold.append([task.spec.labels[k] for k in labels[keep]])
    return entity_metrics(predicted, gold)


training_args = TrainingArguments(
    output_dir=args.output, max_steps=args.max_steps, learning_rate=1e-3, per_device_train_batch_size=32,
    per_device_eval_batch_size=64, eval_strategy="steps", eval_steps=max(1, args.max_steps // 4),
    save_strategy="steps", save_steps=max(1, args.max_steps // 4), load_best_model_at_end=True,
    metric_for_best_model="f1", report_to=[], use_cpu=True, warmup_steps=max(1, args.max_steps // 10),
)
trainer = Trainer(model=model, args=training_args, train_dataset=task.train.rows, eval_dataset=task.dev.rows,
                  data_collator=task.collate, compute_metrics=compute_metrics)
trainer.train()
print(trainer.evaluate())
ak.save_adapter(model, "ner", f"{args.output}/adapter", task=task.spec.to_dict())
