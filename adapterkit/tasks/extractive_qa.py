"""extractive-qa: the answer to a question is a span of its context (SQuAD v1.1).

Files: SQuAD JSON ({"data": [{"paragraphs": [{"context", "qas": [{"id", "question",
"answers": [{"text", "answer_start"}]}]}]}]}) or JSON Lines with id, question, context and
answers ({"text": [...], "answer_start": [...]} or a list of {"text", "answer_start"}).

A context longer than --max-seq-len is cut into windows that overlap by `doc_stride` tokens
(at most a quarter of --max-seq-len). A training window without the answer points at the first
token. An answer is the best-scoring span (start logit + end logit) among the `n_best` starts
and ends of every window, inside the context and at most `max_answer_length` tokens long.
Scores: SQuAD v1.1 exact match and F1 (adapterkit.tasks.squad_metric).
"""
from __future__ import annotations

from pathlib import Path

from adapterkit.errors import AdapterkitError
from adapterkit.tasks.registry import register_task_type


@register_task_type
class ExtractiveQA:
    name = "extractive-qa"
    head = "qa"
    problem_type = None
    metric = "f1"
    greater_is_better = True
    stratify_column = None

    def read(self, path, spec, notes):
        return read_questions(path, answers=True)

    def read_inputs(self, path, spec):
        return read_questions(path, answers=False)

    def encode(self, raw, tokenizer, spec, max_seq_len):
        stride = min(spec.doc_stride, max_seq_len // 4)
        labelled = "answers" in raw.column_names

        def tokenize(batch):
            out = tokenizer([q.lstrip() for q in batch["question"]], batch["context"], truncation="only_second",
                            max_length=max_seq_len, stride=stride, return_overflowing_tokens=True,
                            return_offsets_mapping=True)
            enc = {k: out[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in out}
            enc["example"], enc["offsets"] = [], []
            enc["start_positions"], enc["end_positions"] = [], []
            for f, sample in enumerate(out["overflow_to_sample_mapping"]):
                seq = out.sequence_ids(f)
                offsets = [list(o) if s == 1 else [-1, -1] for o, s in zip(out["offset_mapping"][f], seq)]
                enc["example"].append(batch["_row"][sample])
                enc["offsets"].append(offsets)
                start = end = 0
                if labelled and batch["answers"][sample]["text"]:
                    start, end = _token_span(offsets, batch["answers"][sample])
                enc["start_positions"].append(start)
                enc["end_positions"].append(end)
            return enc

        raw = raw.add_column("_row", list(range(len(raw))))
        return raw.map(tokenize, batched=True, remove_columns=raw.column_names, load_from_cache_file=False)

    def collator(self, pad_id):
        import torch

        from adapterkit.data import PadCollator

        pad = PadCollator(pad_id)

        def collate(rows):
            batch = pad(rows)
            for key in ("start_positions", "end_positions"):
                if key in rows[0]:
                    batch[key] = torch.tensor([r[key] for r in rows], dtype=torch.long)  # (B,)
            return batch

        return collate

    def answers(self, model, split, spec, tokenizer, batch_size):
        """Per raw question: (answer text, start char, end char, score)."""
        from adapterkit.data import PadCollator
        from adapterkit.tasks.forward import outputs

        best = [("", -1, -1, float("-inf"))] * len(split.raw)
        example, offsets = split.rows["example"], split.rows["offsets"]
        contexts = split.raw["context"]
        for idx, result in outputs(model, split.rows, batch_size, PadCollator(tokenizer.pad_token_id or 0)):
            starts, ends = result.start_logits.float(), result.end_logits.float()
            for j, f in enumerate(idx):
                i = example[f]
                span = best_span(starts[j], ends[j], offsets[f], spec.n_best, spec.max_answer_length)
                if span and span[2] > best[i][3]:
                    a, b, score = span
                    best[i] = (contexts[i][a:b], a, b, score)
        return best

    def evaluate(self, model, split, spec, tokenizer, batch_size):
        from adapterkit.tasks.squad_metric import squad_scores

        found = self.answers(model, split, spec, tokenizer, batch_size)
        ids = split.raw["id"]
        predictions = {qid: answer[0] for qid, answer in zip(ids, found)}
        golds = {qid: a["text"] for qid, a in zip(ids, split.raw["answers"])}
        return squad_scores(predictions, golds)

    def predict(self, model, split, spec, tokenizer, batch_size):
        found = self.answers(model, split, spec, tokenizer, batch_size)
        return [{"id": qid, "answer": text, "start": a, "end": b, "score": round(score, 4)}
                for qid, (text, a, b, score) in zip(split.raw["id"], found)]


def best_span(start_logits, end_logits, offsets, n_best: int, max_answer_length: int):
    """(start char, end char, score) of the best valid span of one window, or None."""
    k = min(n_best, len(offsets))
    starts = start_logits[: len(offsets)].topk(k).indices.tolist()
    ends = end_logits[: len(offsets)].topk(k).indices.tolist()
    best = None
    for s in starts:
        for e in ends:
            if offsets[s][0] < 0 or offsets[e][0] < 0 or e < s or e - s + 1 > max_answer_length:
                continue
            score = float(start_logits[s] + end_logits[e])
            if best is None or score > best[2]:
                best = (offsets[s][0], offsets[e][1], score)
    return best


def _token_span(offsets, answers) -> tuple[int, int]:
    """Token positions of the first gold answer inside this window, else (0, 0)."""
    a = answers["answer_start"][0]
    b = a + len(answers["text"][0])
    inside = [t for t, (x, y) in enumerate(offsets) if x >= 0]
    if not inside or offsets[inside[0]][0] > a or offsets[inside[-1]][1] < b:
        return 0, 0
    start = next(t for t in inside if offsets[t][1] > a)
    end = next(t for t in reversed(inside) if offsets[t][0] < b)
    return start, end


def read_questions(path, answers: bool):
    """Questions as a Dataset with id, question, context[, answers {"text", "answer_start"}]."""
    import datasets

    from adapterkit.io.files import require_file

    path = require_file(path)
    rows = list(_squad_rows(path) if _is_squad_json(path) else _jsonl_rows(path))
    if not rows:
        raise AdapterkitError(f"{path}: no questions")
    out = {"id": [], "question": [], "context": []}
    if answers:
        out["answers"] = []
    seen = set()
    for where, row in rows:
        for key in ("question", "context"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise AdapterkitError(f"{where}: {key!r} is empty or missing")
        qid = str(row.get("id", len(out["id"])))
        if qid in seen:
            raise AdapterkitError(f"{where}: question id {qid!r} repeats")
        seen.add(qid)
        out["id"].append(qid)
        out["question"].append(row["question"])
        out["context"].append(row["context"])
        if answers:
            out["answers"].append(_answers(row.get("answers"), row["context"], where))
    return datasets.Dataset.from_dict(out)


# what the reader relies on in a SQuAD JSON file (checked first: one error naming the place)
SQUAD_SCHEMA = {"data": [{"paragraphs?": [{"context?": str, "qas?": [dict]}]}]}


def _is_squad_json(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(200).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    return path.suffix.lower() == ".json" and head.startswith("{") and '"data"' in head


def _squad_rows(path: Path):
    from adapterkit.io.files import read_json

    data = read_json(path, "a SQuAD JSON file", SQUAD_SCHEMA, max_bytes=1 << 30)
    for a, article in enumerate(data["data"]):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            for q, qa in enumerate(paragraph.get("qas", [])):
                where = f"{path} article {a + 1} paragraph {p + 1} question {q + 1}"
                yield where, {"context": paragraph.get("context"), **qa}


def _jsonl_rows(path: Path):
    from adapterkit.data.user_files import iter_records

    for number, record in iter_records(path):
        yield f"{path}:{number}", record


def _answers(value, context: str, where: str) -> dict:
    """{"text": [...], "answer_start": [...]}, each answer checked against its context."""
    if isinstance(value, dict):
        value = [{"text": t, "answer_start": s} for t, s in zip(value.get("text", []), value.get("answer_start", []))]
    if not isinstance(value, list) or not value:
        raise AdapterkitError(f"{where}: 'answers' is missing or empty")
    texts, starts = [], []
    for answer in value:
        text, start = answer.get("text") if isinstance(answer, dict) else None, \
            answer.get("answer_start") if isinstance(answer, dict) else None
        if not isinstance(text, str) or not isinstance(start, int) or context[start:start + len(text)] != text:
            raise AdapterkitError(f"{where}: answer {answer!r} is not the context's text at answer_start")
        texts.append(text)
        starts.append(start)
    return {"text": texts, "answer_start": starts}
