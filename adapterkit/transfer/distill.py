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
import time
from pathlib import Path

import torch

from adapterkit.errors import AdapterkitError
from adapterkit.io.atomic import write_json
from adapterkit.precision import under_precision
from adapterkit.toolkit.scoring import predict_logits, score
from adapterkit.transfer.common import DomainData, load_domains, make_model
from adapterkit.transfer.kd import KDConfig, TrainConfig, distill, train_supervised
from adapterkit.transfer.registry import TransferSpec, register_algorithm, resolve_options

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


TEACHER_OPTIONS = {"teacher_mode": "adapter", "teacher_lr": None, "teacher_epochs": None}  # None: see new_teacher
STUDENT_OPTIONS = {"student_layers": 2, "student_hidden": None, "temperature": None, "alpha": 0.5, "beta": 100.0,
                   "kd_epochs": None, "kd_lr": 1e-4}  # None: see kd_config
KD_OPTIONS = {"method": "tinybert", "teacher": "single", **TEACHER_OPTIONS, **STUDENT_OPTIONS}
METAKD_OPTIONS = {"proto_alpha": 0.5, "domain_weight": 0.5, **TEACHER_OPTIONS, **STUDENT_OPTIONS}


def new_teacher(spec: TransferSpec, mode: str, opts: dict | None = None):
    """A fresh classification model with, in adapter mode, an adapter named TEACHER; and its
    TrainConfig (teacher_lr default: spec.lr for an adapter, 5e-5 for the full backbone;
    teacher_epochs default: spec.epochs)."""
    from adapterkit.model import add_adapter

    opts = {**TEACHER_OPTIONS, **(opts or {})}
    model, tokenizer = make_model(spec)
    lr = opts["teacher_lr"] if opts["teacher_lr"] is not None else (spec.lr if mode == "adapter" else 5e-5)
    if mode == "adapter":
        add_adapter(model, TEACHER, spec.adapter_config())
    epochs = opts["teacher_epochs"] if opts["teacher_epochs"] is not None else spec.epochs
    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=spec.batch_size, seed=spec.seed, mode=mode,
                      adapter=TEACHER if mode == "adapter" else None, max_steps=4 if spec.quick else None)
    return model, tokenizer, cfg


def kd_config(spec: TransferSpec, method: str, opts: dict) -> KDConfig:
    """temperature default: 1 for tinybert and metakd, else 2; kd_epochs default: spec.epochs."""
    temperature = opts["temperature"] if opts["temperature"] is not None else (1.0 if method in ("tinybert", "metakd") else 2.0)
    return KDConfig(method=method, temperature=temperature, alpha=opts["alpha"], beta=opts["beta"],
                    epochs=opts["kd_epochs"] if opts["kd_epochs"] is not None else spec.epochs,
                    lr=opts["kd_lr"], batch_size=spec.batch_size, seed=spec.seed, max_steps=4 if spec.quick else None)


def _student(teacher, opts: dict):
    from adapterkit.transfer.student import make_student

    return make_student(teacher, int(opts["student_layers"]), hidden_size=opts["student_hidden"])


def _result(teacher, student, data: DomainData, pad_id: int, extra: dict) -> dict:
    return {"test": score(student, data.test, pad_id), "dev": score(student, data.dev, pad_id),
            "teacher_test": score(teacher, data.test, pad_id),
            "params": {"teacher": count_params(teacher), "student": count_params(student)}, **extra}


@register_algorithm("kd", needs_sources=False)
def knowledge_distillation(spec: TransferSpec) -> dict:
    """Teacher (target, or teacher=mix: sources+target) distilled into a shallow student (method=vanilla|pkd|tinybert)."""
    opts = resolve_options(spec.options, KD_OPTIONS, "kd")
    torch.manual_seed(spec.seed)
    method, which = opts["method"], opts["teacher"]
    if which not in ("single", "mix"):
        raise AdapterkitError(f"option teacher must be 'single' or 'mix', got {which!r}")
    teacher, tokenizer, tcfg = new_teacher(spec, opts["teacher_mode"], opts)
    data = load_domains(spec, tokenizer)
    pad = tokenizer.pad_token_id or 0
    names = [*spec.source, spec.target] if which == "mix" else [spec.target]
    train_supervised(teacher, concat_domains(data, names)[0], tcfg, pad)
    student = _student(teacher, opts)
    history = distill(teacher, student, data[spec.target].train, kd_config(spec, method, opts), pad)
    _save(spec, teacher, student, tokenizer)
    return _result(teacher, student, data[spec.target], pad, {"method": method, "teacher": which,
                                                             **_losses(history)})


@register_algorithm("metakd")
def meta_kd(spec: TransferSpec) -> dict:
    """MetaKD: meta-teacher on sources + target (prototype-weighted, domain corruption), meta-distilled into the target's student."""
    from adapterkit.toolkit.features import frozen_features
    from adapterkit.transfer.metakd import meta_distill, train_meta_teacher
    from adapterkit.transfer.typicality import typicality_scores

    opts = resolve_options(spec.options, METAKD_OPTIONS, "metakd")
    torch.manual_seed(spec.seed)
    if not spec.source:
        raise AdapterkitError("metakd needs source domains besides the target")
    teacher, tokenizer, tcfg = new_teacher(spec, opts["teacher_mode"], opts)
    data = load_domains(spec, tokenizer)
    pad = tokenizer.pad_token_id or 0
    names = [*spec.source, spec.target]
    rows, domains = concat_domains(data, names)
    labels = torch.tensor([r["labels"] for r in rows])
    scores = typicality_scores(frozen_features(teacher, rows, pad), labels, domains,
                              alpha=opts["proto_alpha"])
    gamma = opts["domain_weight"]
    head = train_meta_teacher(teacher, rows, domains, scores, tcfg, pad, domain_weight=gamma)
    student = _student(teacher, opts)
    target = len(names) - 1
    cfg = kd_config(spec, "metakd", opts)
    cfg.domain_weight = gamma
    history = meta_distill(teacher, head, student, data[spec.target].train, target, scores[domains == target], cfg, pad)
    _save(spec, teacher, student, tokenizer)
    return _result(teacher, student, data[spec.target], pad, {"method": "metakd", "teacher": "meta",
                                                             **_losses(history), "mean_weight": history["mean_weight"]})


def _losses(history: dict) -> dict:
    """The distillation loss at the first and the last step."""
    return {"first_loss": history["losses"][0], "final_loss": history["losses"][-1]}


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
    from adapterkit.data.metrics import compute_metrics
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
               "teacher_dev": compute_metrics(task_, predict_logits(teacher, dev, pad, title="teacher dev").numpy(), labels),
               "student_dev": compute_metrics(task_, predict_logits(student, dev, pad, title="student dev").numpy(), labels),
               "params": {"teacher": count_params(teacher), "student": count_params(student)},
               "train_rows": len(train), "steps": history["steps"], "train_seconds": seconds,
               "final_loss": history["losses"][-1], "kd": cfg.to_dict(), "teacher_dir": str(teacher_dir)}
    out = Path(output)
    save_student(student, out, tokenizer, {"task": task_.name, "max_seq_len": seq, "data_dir": data_dir,
                                           "kd": cfg.to_dict(), "teacher": str(teacher_dir)})
    write_json(out / "metrics.json", metrics)
    # what `adapterkit eval/predict --adapter OUTPUT` read (the model itself comes from student.json)
    run = {"task": task_.name, "kind": "student", "max_seq_len": seq, "data_dir": data_dir}
    write_json(out / "run_config.json", run)
    return metrics


def load_teacher(folder: str | Path, task: str | None = None):
    """(model, tokenizer, task, run config) from an `adapterkit train` folder or a student folder."""
    from adapterkit.evaluation import load_run

    return load_run(folder, task)


@under_precision("kd")
def metakd_run(domains: list[str], targets: list[str], student_layers: int, kd: KDConfig, teacher_cfg: TrainConfig,
               output: str | Path, model: str | None = None, teacher_dir: str | Path | None = None,
               max_seq_len: int = 128, data_dir: str | None = None, bottleneck_dim: int | None = 64,
               sharing=1, reduction_factor: float | None = None,
               proto_alpha: float = 0.5, train_limit: int | None = None, eval_limit: int | None = None) -> dict:
    """MetaKD over Amazon `domains`: train (or load from `teacher_dir`) the meta-teacher, then
    meta-distil one student per target domain; test accuracy of teacher and students."""
    from adapterkit.transfer.metakd import meta_distill
    from adapterkit.transfer.student import make_student, save_student

    unknown = [t for t in targets if t not in domains]
    if unknown:
        raise AdapterkitError(f"target domains {unknown} are not among --domains {domains}")
    spec = TransferSpec(source=domains[:-1], target=domains[-1], model=model, max_seq_len=max_seq_len,
                        data_dir=data_dir, bottleneck_dim=bottleneck_dim, sharing=sharing,
                        reduction_factor=reduction_factor, seed=kd.seed)
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
    write_json(out / "metrics.json", results)
    return results


def _meta_teacher(spec: TransferSpec, domains, kd: KDConfig, teacher_cfg: TrainConfig, out: Path, teacher_dir,
                  proto_alpha: float, train_limit, eval_limit):
    """The meta-teacher (trained and saved to out/meta_teacher, or loaded), its domain head, the
    tokenizer, the domains' data, and every train row's domain index and prototype score."""
    from adapterkit.toolkit.features import frozen_features
    from adapterkit.transfer.metakd import load_meta_teacher, save_meta_teacher, train_meta_teacher
    from adapterkit.transfer.typicality import typicality_scores

    if teacher_dir:
        teacher, head, tokenizer, info = load_meta_teacher(teacher_dir)
        if info["domains"] != domains:
            raise AdapterkitError(f"meta-teacher {teacher_dir} was trained on {info['domains']}, not {domains}")
        spec.model = info.get("base_model") or spec.model
    else:
        torch.manual_seed(kd.seed)
        teacher, tokenizer, _ = new_teacher(spec, teacher_cfg.mode)
    # spec's sources and target are `domains`; the limits sample with seed 0 whatever the run's seed, as always
    data = load_domains(spec, tokenizer, train_limit, eval_limit, sample_seed=0)
    pad = tokenizer.pad_token_id or 0
    rows, dom = concat_domains(data, domains)
    labels = torch.tensor([r["labels"] for r in rows])
    embed_model = make_model(spec)[0] if teacher_dir else teacher  # the pre-trained backbone
    scores = typicality_scores(frozen_features(embed_model, rows, pad), labels, dom, alpha=proto_alpha)
    if not teacher_dir:
        head = train_meta_teacher(teacher, rows, dom, scores, teacher_cfg, pad, domain_weight=kd.domain_weight)
        save_meta_teacher(teacher, head, out / "meta_teacher", tokenizer, domains, base_model=spec.model)
    return teacher, head, tokenizer, data, dom, scores
