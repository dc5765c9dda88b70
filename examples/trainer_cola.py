"""Train an adapter with the stock Hugging Face Trainer (no adapterkit training loop).

    python examples/trainer_cola.py --max-steps 200

Checkpoints hold only the adapter and the head; load_best_model_at_end restores the best one.
Data: GLUE CoLA in GLUE layout (--data-dir, $ADAPTERKIT_DATA_DIR or ../shared/data/glue).
"""
import argparse

import numpy as np
from transformers import Trainer, TrainingArguments

import adapterkit as ak
from adapterkit.backbone import load_model, load_tokenizer
from adapterkit.data import PadCollator, encode, load_glue
from adapterkit.data.metrics import compute_metrics

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", default=None)
parser.add_argument("--max-steps", type=int, default=200)
parser.add_argument("--output", default="runs/trainer-cola")
parser.add_argument("--model", default="all-MiniLM-L6-v2", help="backbone name or folder")
args = parser.parse_args()

tokenizer = load_tokenizer(args.model)
model = load_model(args.model, num_labels=2)
ak.add_adapter(model, "cola", ak.BottleneckConfig(bottleneck_dim=64, sharing=3))
ak.train_adapter(model, "cola")  # frozen backbone; checkpoints now hold only adapter + head

train = encode(load_glue("cola", "train", args.data_dir), tokenizer, "cola", max_seq_len=64)
dev = encode(load_glue("cola", "dev", args.data_dir), tokenizer, "cola", max_seq_len=64)

training_args = TrainingArguments(
    output_dir=args.output, max_steps=args.max_steps, learning_rate=1e-3, per_device_train_batch_size=32, per_device_eval_batch_size=128,
    eval_strategy="steps", eval_steps=max(1, args.max_steps // 4), save_strategy="steps",
    save_steps=max(1, args.max_steps // 4), load_best_model_at_end=True,
    metric_for_best_model="matthews_correlation", report_to=[], use_cpu=True, warmup_steps=max(1, args.max_steps // 10),
)
trainer = Trainer(
    model=model, args=training_args, train_dataset=train, eval_dataset=dev,
    data_collator=PadCollator(tokenizer.pad_token_id),
    compute_metrics=lambda p: compute_metrics("cola", np.asarray(p.predictions), p.label_ids),
)
trainer.train()
print(trainer.evaluate())
ak.save_adapter(model, "cola", f"{args.output}/adapter")
