"""Model-based transfer: knowledge distillation (EasyTransfer, Wang et al. CIKM 2021, sections 2.2,
4.2, 5.6; https://arxiv.org/abs/2011.09463).

Registered algorithms (`adapterkit transfer run NAME`):
  kd      a teacher (on the target domain, or with option teacher="mix" on sources + target)
          distilled into a shallower student with method vanilla, pkd or tinybert
  metakd  MetaKD (Pan et al. ACL 2021): a meta-teacher on sources + target, meta-distilled into
          the target domain's student (see adapterkit.transfer.metakd)
and the functions behind `adapterkit distill`: `distill_run` (a saved teacher folder -> a saved
student) and `metakd_run` (domains -> meta-teacher -> one student per domain).

A teacher is a backbone plus an adapter (option teacher_mode="adapter", the default) or a fully
fine-tuned backbone; a student is the teacher's bottom `student_layers` layers (adapters
included), every parameter trained (see adapterkit.transfer.student).
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch

from adapterkit.errors import AdapterkitError
from adapterkit.precision import under_precision
from adapterkit.transfer.common import DomainData, load_domains, make_model, predict, score
from adapterkit.transfer.kd import KDConfig, TrainConfig, distill, train_supervised
from adapterkit.transfer.registry import TransferSpec, register_algorithm

TEACHER = "teacher"  # name of the teacher's adapter


def count_params(model) -> int:
    """Distinct parameters of the model as it runs (backbone, adapters, head)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def concat_domains(data: dict[str, DomainData], names: list[str], split: str = "train"):
    """Rows of several domains, one after another, and their domain index in `names` (N,)."""
    rows, domains = [], []
    for k, name in enumerate(names):
        part = getattr(data[name], split)
        rows += part
        domains += [k] * len(part)
    return rows, torch.tensor(domains, dtype=torch.long)


def new_teacher(spec: TransferSpec, mode: str):
    """A fresh classification model with, in adapter mode, an adapter named TEACHER; and its TrainConfig."""
    from adapterkit.config import BottleneckConfig
    from adapterkit.model import add_adapter

    model, tokenizer = make_model(spec)
    lr = spec.options.get("teacher_lr", spec.lr if mode == "adapter" else 5e-5)
    if mode == "adapter":
        add_adapter(model, TEACHER, BottleneckConfig(bottleneck_dim=spec.bottleneck_dim, sharing=spec.sharing))
    epochs = spec.options.get("teacher_epochs", spec.epochs)
    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=spec.batch_size, seed=spec.seed, mode=mode,
                      adapter=TEACHER if mode == "adapter" else None, max_steps=4 if spec.quick else None)
    return model, tokenizer, cfg


def kd_config(spec: TransferSpec, method: str) -> KDConfig:
    o = spec.options
    return KDConfig(method=method, temperature=o.get("temperature", 1.0 if method in ("tinybert", "metakd") else 2.0),
                    alpha=o.get("alpha", 0.5), beta=o.get("beta", 100.0), epochs=o.get("kd_epochs", spec.epochs),
                    lr=o.get("kd_lr", 1e-4), batch_size=spec.batch_size, seed=spec.seed,
                    max_steps=4 if spec.quick else None)


def _student(teacher, spec: TransferSpec):
    from adapterkit.transfer.student import make_student

    return make_student(teacher, int(spec.options.get("student_layers", 2)),
                        hidden_size=spec.options.get("student_hidden"))


def _result(teacher, student, data: DomainData, pad_id: int, extra: dict) -> dict:
    return {"test": score(student, data.test, pad_id), "dev": score(student, data.dev, pad_id),
            "teacher_test": score(teacher, data.test, pad_id),
            "params": {"teacher": count_params(teacher), "student": count_params(student)}, **extra}


@register_algorithm("kd", needs_sources=False)
def knowledge_distillation(spec: TransferSpec) -> dict:
    """Teacher (target, or teacher=mix: sources+target) distilled into a shallow student (method=vanilla|pkd|tinybert)."""
    torch.manual_seed(spec.seed)
    method, which = spec.options.get("method", "tinybert"), spec.options.get("teacher", "single")
    if which not in ("single", "mix"):
        raise AdapterkitError(f"option teacher must be 'single' or 'mix', got {which!r}")
    teacher, tokenizer, tcfg = new_teacher(spec, spec.options.get("teacher_mode", "adapter"))
    data = load_domains(spec, tokenizer)
    pad = tokenizer.pad_token_id or 0
    names = [*spec.source, spec.target] if which == "mix" else [spec.target]
    train_supervised(teacher, concat_domains(data, names)[0], tcfg, pad)
    student = _student(teacher, spec)
    history = distill(teacher, student, data[spec.target].train, kd_config(spec, method), pad)
    _save(spec, teacher, student, tokenizer)
    return _result(teacher, student, data[spec.target], pad, {"method": method, "teacher": which,
                                                             "final_loss": history["losses"][-1]})


@register_algorithm("metakd")
def meta_kd(spec: TransferSpec) -> dict:
    """MetaKD: meta-teacher on sources + target (prototype-weighted, domain corruption), meta-distilled into the target's student."""
    from adapterkit.transfer.metakd import meta_distill, prototype_scores, sentence_embeddings, train_meta_teacher

    torch.manual_seed(spec.seed)
    if not spec.source:
        raise AdapterkitError("metakd needs source domains besides the target")
    teacher, tokenizer, tcfg = new_teacher(spec, spec.options.get("teacher_mode", "adapter"))
    data = load_domains(spec, tokenizer)
    pad = tokenizer.pad_token_id or 0
    names = [*spec.source, spec.target]
    rows, domains = concat_domains(data, names)
    labels = torch.tensor([r["labels"] for r in rows])
    scores = prototype_scores(sentence_embeddings(teacher, rows, pad), labels, domains,
                              alpha=spec.options.get("proto_alpha", 0.5))
    gamma = spec.options.get("domain_weight", 0.5)
    head = train_meta_teacher(teacher, rows, domains, scores, tcfg, pad, domain_weight=gamma)
    student = _student(teacher, spec)
    target = len(names) - 1
    cfg = kd_config(spec, "metakd")
    cfg.domain_weight = gamma
    history = meta_distill(teacher, head, student, data[spec.target].train, target, scores[domains == target], cfg, pad)
    _save(spec, teacher, student, tokenizer)
    return _result(teacher, student, data[spec.target], pad, {"method": "metakd", "teacher": "meta",
                                                             "final_loss": history["losses"][-1],
                                                             "mean_weight": history["mean_weight"]})


def _save(spec: TransferSpec, teacher, student, tokenizer) -> None:
    from adapterkit.transfer.student import save_student

    if spec.output:
        save_student(student, Path(spec.output) / "student", tokenizer, {"target": spec.target})


@under_precision("cfg")
def distill_run(teacher_dir: str | Path, student_layers: int, cfg: KDConfig, output: str | Path,
                task: str | None = None, data_dir: str | None = None, max_seq_len: int | None = None,
                train_limit: int | None = None, student_hidden: int | None = None) -> dict:
    """Distil a saved teacher (`adapterkit train` output or a distilled student) on its GLUE task.

    Trains on the task's train split (first `train_limit` rows), scores teacher and student on dev,
    writes the student (`save_student`) and metrics.json to `output`; returns the metrics."""
    from adapterkit.data import encode, load_glue
    from adapterkit.metrics import compute_metrics
    from adapterkit.transfer.student import make_student, save_student

    teacher, tokenizer, task_, run = load_teacher(teacher_dir, task)
    seq = max_seq_len or run.get("max_seq_len", 128)
    data_dir = data_dir or run.get("data_dir")
    train = [dict(r) for r in encode(load_glue(task_, "train", data_dir, limit=train_limit), tokenizer, task_, seq)]
    dev = [dict(r) for r in encode(load_glue(task_, "dev", data_dir), tokenizer, task_, seq)]
    pad = tokenizer.pad_token_id or 0
    torch.manual_seed(cfg.seed)
    student = make_student(teacher, student_layers, hidden_size=student_hidden)
    t0 = time.perf_counter()
    history = distill(teacher, student, train, cfg, pad)
    seconds = time.perf_counter() - t0
    labels = [r["labels"] for r in dev]
    metrics = {"task": task_.name, "method": cfg.method, "student_layers": student_layers,
               "teacher_dev": compute_metrics(task_, predict(teacher, dev, pad, title="teacher dev").numpy(), labels),
               "student_dev": compute_metrics(task_, predict(student, dev, pad, title="student dev").numpy(), labels),
               "params": {"teacher": count_params(teacher), "student": count_params(student)},
               "train_rows": len(train), "steps": history["steps"], "train_seconds": seconds,
               "final_loss": history["losses"][-1], "kd": cfg.to_dict(), "teacher_dir": str(teacher_dir)}
    out = Path(output)
    save_student(student, out, tokenizer, {"task": task_.name, "max_seq_len": seq, "data_dir": data_dir,
                                           "kd": cfg.to_dict(), "teacher": str(teacher_dir)})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    # what `adapterkit eval/predict --adapter OUTPUT` read (the model itself comes from student.json)
    run = {"task": task_.name, "kind": "student", "max_seq_len": seq, "data_dir": data_dir}
    (out / "run_config.json").write_text(json.dumps(run, indent=2))
    return metrics


def load_teacher(folder: str | Path, task: str | None = None):
    """(model, tokenizer, task, run config) from an `adapterkit train` folder or a student folder."""
    from adapterkit.evaluation import load_run

    return load_run(folder, task)


def domain_data(names: list[str], tokenizer, max_seq_len: int = 128, data_dir: str | None = None,
                train_limit: int | None = None, eval_limit: int | None = None) -> dict[str, DomainData]:
    """Encoded train/dev/test rows of Amazon domains (fixed split); with `train_limit` / `eval_limit`
    a seeded random sample of that many train / dev and test rows (tokenized directly, without
    `datasets.map`)."""
    from adapterkit.data import load_domain_splits

    out = {}
    for name in names:
        splits = load_domain_splits(name, seed=0, data_dir=data_dir)
        parts = {}
        for split, limit in (("train", train_limit), ("dev", eval_limit), ("test", eval_limit)):
            data = splits[split]
            if limit and limit < len(data):  # splits are stored label by label: sample, do not cut
                data = data.shuffle(seed=0).select(range(limit))
            enc = tokenizer(list(data["text"]), truncation=True, max_length=max_seq_len)
            keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
            parts[split] = [{**{k: enc[k][i] for k in keys}, "labels": int(y)} for i, y in enumerate(list(data["label"]))]
        out[name] = DomainData(name, parts["train"], parts["dev"], parts["test"])
    return out


@under_precision("kd")
def metakd_run(domains: list[str], targets: list[str], student_layers: int, kd: KDConfig, teacher_cfg: TrainConfig,
               output: str | Path, model: str | None = None, teacher_dir: str | Path | None = None,
               max_seq_len: int = 128, data_dir: str | None = None, bottleneck_dim: int = 64,
               proto_alpha: float = 0.5, train_limit: int | None = None, eval_limit: int | None = None) -> dict:
    """MetaKD over Amazon `domains`: train (or load from `teacher_dir`) the meta-teacher, then
    meta-distil one student per target domain; test accuracy of teacher and students."""
    from adapterkit.transfer.metakd import meta_distill
    from adapterkit.transfer.student import make_student, save_student

    unknown = [t for t in targets if t not in domains]
    if unknown:
        raise AdapterkitError(f"target domains {unknown} are not among --domains {domains}")
    spec = TransferSpec(source=domains[:-1], target=domains[-1], model=model, max_seq_len=max_seq_len,
                        data_dir=data_dir, bottleneck_dim=bottleneck_dim, seed=kd.seed)
    out = Path(output)
    teacher, head, tokenizer, data, dom, scores = _meta_teacher(spec, domains, kd, teacher_cfg, out, teacher_dir,
                                                                proto_alpha, train_limit, eval_limit)
    pad = tokenizer.pad_token_id or 0
    results = {"domains": domains, "teacher_test": {}, "student_test": {}, "params": {"teacher": count_params(teacher)}}
    for target in targets:
        k = domains.index(target)
        student = make_student(teacher, student_layers)
        meta_distill(teacher, head, student, data[target].train, k, scores[dom == k], copy.copy(kd), pad)
        results["teacher_test"][target] = score(teacher, data[target].test, pad)
        results["student_test"][target] = score(student, data[target].test, pad)
        results["params"]["student"] = count_params(student)
        save_student(student, out / f"student-{target}", tokenizer, {"domain": target, "kd": kd.to_dict()})
    (out / "metrics.json").write_text(json.dumps(results, indent=2))
    return results


def _meta_teacher(spec: TransferSpec, domains, kd: KDConfig, teacher_cfg: TrainConfig, out: Path, teacher_dir,
                  proto_alpha: float, train_limit, eval_limit):
    """The meta-teacher (trained and saved to out/meta_teacher, or loaded), its domain head, the
    tokenizer, the domains' data, and every train row's domain index and prototype score."""
    from adapterkit.transfer.metakd import (load_meta_teacher, prototype_scores, save_meta_teacher,
                                            sentence_embeddings, train_meta_teacher)

    if teacher_dir:
        teacher, head, tokenizer, info = load_meta_teacher(teacher_dir)
        if info["domains"] != domains:
            raise AdapterkitError(f"meta-teacher {teacher_dir} was trained on {info['domains']}, not {domains}")
        spec.model = info.get("base_model") or spec.model
    else:
        torch.manual_seed(kd.seed)
        teacher, tokenizer, _ = new_teacher(spec, teacher_cfg.mode)
    data = domain_data(domains, tokenizer, spec.max_seq_len, spec.data_dir, train_limit, eval_limit)
    pad = tokenizer.pad_token_id or 0
    rows, dom = concat_domains(data, domains)
    labels = torch.tensor([r["labels"] for r in rows])
    embed_model = make_model(spec)[0] if teacher_dir else teacher  # the pre-trained backbone
    scores = prototype_scores(sentence_embeddings(embed_model, rows, pad), labels, dom, alpha=proto_alpha)
    if not teacher_dir:
        head = train_meta_teacher(teacher, rows, dom, scores, teacher_cfg, pad, domain_weight=kd.domain_weight)
        save_meta_teacher(teacher, head, out / "meta_teacher", tokenizer, domains, base_model=spec.model)
    return teacher, head, tokenizer, data, dom, scores
