"""The shared tools every training loop and algorithm is built from (one copy of each).

  batching   rows -> padded batches (`batches`, `pad`, `model_inputs`, `cycle`)
  features   `masked_mean` pooling, `adapters_off` (a context that restores the active set),
             `eval_mode`, `in_row_order` (run a function over batches, results in row order),
             `frozen_features` (the bare backbone's mean-pooled sentence features)
  scoring    `predict_logits` of a classifier on rows, `classification_scores` (accuracy, F1)
  schedule   `linear_warmup` (the learning-rate schedule), `fit` (AdamW over a loss function)
Atomic file writes live in `adapterkit.io.atomic`, layer-stack slicing in `adapterkit.slicing`.
Rows are encoded examples: dicts with input_ids, [attention_mask, token_type_ids], labels.
"""
