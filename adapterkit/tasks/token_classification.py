"""token-classification: a tag per word (NER, chunking, POS).

Words are tokenized into sub-tokens; the word's tag is the label of its first sub-token, the
other sub-tokens and special tokens are ignored by the loss (-100), and a word's prediction is
its first sub-token's. Words cut off by --max-seq-len are predicted "O" (and scored so).
Metrics are entity-level precision/recall/F1 from seqeval (adapterkit.tasks.metrics).
"""
from __future__ import annotations

from adapterkit.errors import AdapterkitError
from adapterkit.tasks import tags as tagging
from adapterkit.tasks.registry import register_task_type

IGNORE = -100


@register_task_type
class TokenClassification:
    name = "token-classification"
    head = "token"
    problem_type = None
    metric = "f1"
    greater_is_better = True
    stratify_column = None

    def read(self, path, spec, notes):
        import datasets

        sentences = tagging.read_tagged(path, spec.label_column, spec.text_column)
        first = spec.tag_scheme is None
        rows, scheme = tagging.normalise([s[1] for s in sentences], spec.tag_scheme, str(path), [s[2] for s in sentences])
        if first:
            notes.append(f"{path}: tag scheme {scheme} (detected; --tag-scheme sets it)"
                         + (", trained and predicted as iob2" if scheme == "iob1" else ""))
        spec.tag_scheme = scheme
        if spec.labels is None:
            names = sorted({t for r in rows for t in r} - {"O"}, key=lambda t: (t[2:], t[0]))
            spec.labels = ["O", *names]
        known = set(spec.labels)
        for (words, _, where), r in zip(sentences, rows):
            unknown = next((t for t in r if t not in known), None)
            if unknown:
                raise AdapterkitError(f"{where}: tag {unknown!r} is not one of the training tags {spec.labels}")
        return datasets.Dataset.from_dict({"words": [s[0] for s in sentences], "tags": rows})

    def read_inputs(self, path, spec):
        """Words to tag: a CoNLL-style file (the first column is the word, other columns are
        ignored, a blank line ends a sentence) or JSONL rows with a `tokens` list."""
        import datasets

        from adapterkit.io.files import require_file, text_lines

        path = require_file(path, "input file")
        if path.suffix.lower() in (".jsonl", ".json"):
            from adapterkit.data.user_files import iter_records

            words = []
            for number, record in iter_records(path):
                tokens = next((record[c] for c in tagging.TOKEN_GUESSES if c in record), None)
                if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t for t in tokens):
                    raise AdapterkitError(f"{path}:{number}: expected a non-empty list of tokens under 'tokens'")
                words.append(tokens)
        else:
            words, current = [], []
            for line in [line for _, line in text_lines(path, "a CoNLL file")] + [""]:
                fields = line.split()
                if not fields or fields[0] == "-DOCSTART-":
                    if current:
                        words.append(current)
                    current = []
                else:
                    current.append(fields[0])
        if not words:
            raise AdapterkitError(f"{path}: no sentences to tag")
        return datasets.Dataset.from_dict({"words": words})

    def encode(self, raw, tokenizer, spec, max_seq_len):
        index = {t: i for i, t in enumerate(spec.labels)}
        labelled = "tags" in raw.column_names

        def tokenize(batch):
            out = tokenizer(batch["words"], is_split_into_words=True, truncation=True, max_length=max_seq_len)
            first_words, labels = [], []
            for b in range(len(batch["words"])):
                word_ids, prev, first, lab = out.word_ids(b), None, [], []
                for w in word_ids:
                    is_first = w is not None and w != prev
                    first.append(w if is_first else -1)
                    if labelled:
                        lab.append(index[batch["tags"][b][w]] if is_first else IGNORE)
                    prev = w
                first_words.append(first)
                labels.append(lab)
            enc = {k: out[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in out}
            enc["word_index"] = first_words
            if labelled:
                enc["labels"] = labels
            return enc

        if not getattr(tokenizer, "is_fast", False):
            raise AdapterkitError("token classification needs a fast tokenizer (word alignment)")
        return raw.map(tokenize, batched=True, remove_columns=raw.column_names, load_from_cache_file=False)

    def collator(self, pad_id):
        from adapterkit.data import PadCollator

        return PadCollator(pad_id, label_pad=IGNORE)

    def word_tags(self, model, split, spec, tokenizer, batch_size):
        """Per raw sentence: (predicted tags, scores) per word; words past the cut are O."""
        from adapterkit.data import PadCollator
        from adapterkit.tasks.forward import outputs

        out = [None] * len(split.rows)
        word_index = split.rows["word_index"]
        for idx, result in outputs(model, split.rows, batch_size, PadCollator(tokenizer.pad_token_id or 0)):
            probs = result.logits.float().softmax(-1)
            for j, i in enumerate(idx):
                n_words = len(split.raw[i]["words"])
                tags, scores = ["O"] * n_words, [0.0] * n_words
                for t, w in enumerate(word_index[i]):
                    if w >= 0:
                        k = int(probs[j, t].argmax())
                        tags[w], scores[w] = spec.labels[k], float(probs[j, t, k])
                out[i] = (tags, scores)
        return out

    def evaluate(self, model, split, spec, tokenizer, batch_size):
        from adapterkit.tasks.metrics import entity_metrics

        predicted = [tags for tags, _ in self.word_tags(model, split, spec, tokenizer, batch_size)]
        return entity_metrics(predicted, split.raw["tags"])

    def predict(self, model, split, spec, tokenizer, batch_size):
        result = self.word_tags(model, split, spec, tokenizer, batch_size)
        return [{"words": words, "tags": tags, "scores": [round(s, 6) for s in scores]}
                for words, (tags, scores) in zip(split.raw["words"], result)]

