"""causal-lm: continue a text; trained with the loss on the response only.

Files: plain text (.txt: each non-empty line is one example, all of it trained on) or JSON
Lines with prompt and response (also instruction/input and output/completion), or text.
An example is prompt tokens + response tokens + the end-of-text token; the prompt's positions
are ignored by the loss (-100), so the model learns to answer, not to repeat the question.
Too long: the response keeps at most half of --max-seq-len, the prompt keeps its end.
Metric: perplexity over the response tokens (lower is better). `predict` generates greedily
up to the spec's max_new_tokens from each prompt.
"""
from __future__ import annotations

from adapterkit.errors import AdapterkitError
from adapterkit.tasks.registry import register_task_type

IGNORE = -100
PROMPT_GUESSES = ("prompt", "instruction", "input", "question", "source")
RESPONSE_GUESSES = ("response", "output", "completion", "answer", "target")


@register_task_type
class CausalLM:
    name = "causal-lm"
    head = "causal-lm"
    problem_type = None
    metric = "perplexity"
    greater_is_better = False
    stratify_column = None

    def read(self, path, spec, notes):
        return read_examples(path, spec, notes, responses=True)

    def read_inputs(self, path, spec):
        return read_examples(path, spec, [], responses=False)

    def encode(self, raw, tokenizer, spec, max_seq_len):
        end = _end_token(tokenizer)
        with_response = "response" in raw.column_names

        def tokenize(batch):
            prompts = tokenizer(batch["prompt"], add_special_tokens=False)["input_ids"]
            responses = tokenizer(batch["response"], add_special_tokens=False)["input_ids"] if with_response \
                else [[] for _ in prompts]
            ids, labels = [], []
            for p, r in zip(prompts, responses):
                r = (r + [end] if with_response else [])[: max_seq_len // 2 if p else max_seq_len]
                room = max_seq_len - len(r)
                p = p[len(p) - room:] if 0 < room < len(p) else (p if room > 0 else [])
                ids.append(p + r)
                labels.append([IGNORE] * len(p) + r)
            return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "labels": labels}

        keep = [c for c in ("prompt", "response") if c in raw.column_names]
        return raw.select_columns(keep).map(tokenize, batched=True, remove_columns=keep, load_from_cache_file=False)

    def collator(self, pad_id):
        from adapterkit.data import PadCollator

        return PadCollator(pad_id, label_pad=IGNORE)

    def evaluate(self, model, split, spec, tokenizer, batch_size):
        import torch

        from adapterkit.data.encode import batches
        from adapterkit.tasks.metrics import perplexity

        model.eval()
        total, count = 0.0, 0
        with torch.inference_mode():
            for _, batch in batches(split.rows, batch_size, self.collator(_pad_id(tokenizer))):
                labels = batch.pop("labels")
                logits = model(**batch).logits.float()  # (B, T, V)
                shifted = labels[:, 1:]  # token t predicts token t+1
                loss = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), shifted,
                                                         ignore_index=IGNORE, reduction="sum")
                total += float(loss)
                count += int((shifted != IGNORE).sum())
        if count == 0:
            raise AdapterkitError("causal-lm evaluation: no response tokens to score")
        return perplexity(total, count)

    def predict(self, model, split, spec, tokenizer, batch_size):
        import torch

        model.eval()
        end = _end_token(tokenizer)
        out = []
        with torch.inference_mode():
            for prompt, ids in zip(split.raw["prompt"], split.rows["input_ids"]):
                ids = ids or [end]
                generated = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                           max_new_tokens=spec.max_new_tokens, do_sample=False,
                                           pad_token_id=_pad_id(tokenizer), eos_token_id=end)
                new = generated[0, len(ids):].tolist()
                if end in new:
                    new = new[:new.index(end)]
                out.append({"prompt": prompt, "generated": tokenizer.decode(new, skip_special_tokens=True)})
        return out


def _end_token(tokenizer) -> int:
    for name in ("eos_token_id", "sep_token_id"):
        if getattr(tokenizer, name, None) is not None:
            return getattr(tokenizer, name)
    raise AdapterkitError("causal-lm needs a tokenizer with an end-of-text (eos or sep) token")


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else _end_token(tokenizer)


def read_examples(path, spec, notes: list[str], responses: bool):
    """A Dataset with prompt[, response] from a .txt or JSONL file."""
    import datasets

    from adapterkit.data.user_files import iter_records
    from adapterkit.io.files import require_file, text_lines
    from adapterkit.tasks.sequence import guess_column

    path = require_file(path)
    if path.suffix.lower() == ".txt":
        lines = [line.strip() for _, line in text_lines(path, "a text file") if line.strip()]
        if not lines:
            raise AdapterkitError(f"{path}: no text")
        return datasets.Dataset.from_dict({"prompt": [""] * len(lines), "response": lines} if responses
                                          else {"prompt": lines})
    prompts, answers = [], []
    for number, record in iter_records(path):
        where = f"{path}:{number}"
        if not prompts and not answers:
            plain = "text" in record and not any(c in record for c in PROMPT_GUESSES)
            prompt_col = None if plain and responses else guess_column(
                list(record), spec.text_column, PROMPT_GUESSES, "prompt", "--text-column", path, notes)
            response_col = ("text" if plain else guess_column(list(record), spec.label_column, RESPONSE_GUESSES,
                                                              "response", "--label-column", path, notes)) if responses else None
            spec.text_column, spec.label_column = prompt_col, response_col
        prompt = record.get(prompt_col, "") if prompt_col else ""
        if not isinstance(prompt, str) or (prompt_col and not responses and not prompt.strip()):
            raise AdapterkitError(f"{where}: column {prompt_col!r} must be text, got {prompt!r}")
        prompts.append(prompt)
        if responses:
            value = record.get(response_col)
            if not isinstance(value, str) or not value.strip():
                raise AdapterkitError(f"{where}: column {response_col!r} is empty or not text ({value!r})")
            answers.append(value)
    if not prompts:
        raise AdapterkitError(f"{path}: no rows")
    return datasets.Dataset.from_dict({"prompt": prompts, "response": answers} if responses else {"prompt": prompts})
