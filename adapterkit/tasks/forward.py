"""Run a model over encoded rows in padded batches, for evaluation and prediction."""
from __future__ import annotations

import torch


@torch.inference_mode()
def outputs(model, rows, batch_size: int, collate, keep=("input_ids", "attention_mask", "token_type_ids")):
    """Yield (row indices, model outputs) over `rows` in length-sorted batches; only the model
    input columns in `keep` are passed (labels stay out, so nothing computes a loss)."""
    from adapterkit.data.encode import batches

    model.eval()
    inputs = rows.select_columns([c for c in keep if c in rows.column_names])
    for idx, batch in batches(inputs, batch_size, collate):
        yield idx, model(**batch)
