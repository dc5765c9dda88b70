"""Train an adapter (or, as the baseline, the whole backbone) on a GLUE task or on the user's
own files for any task type (adapterkit.tasks).

`train(TrainConfig(...))` is what `adapterkit train` runs: it reads and checks the data, builds
the model with the task's head, and hands both to the training loop (adapterkit.loop; the
distributed path is adapterkit.dist.runner). The output folder holds
  adapterkit_config.json, adapterkit_*.safetensors   the best adapter and head, with the head's
                                                    metadata (task type, label names, sizes)
  model/                                            the best full model (--full-finetune runs)
  tokenizer/                                        the tokenizer (JSON/text files only)
  run_config.json                                   the resolved configuration and task spec
  metrics.json                                      dev metrics per evaluation, best one, speed, sizes
  train.log                                         one line per evaluation
  checkpoint/                                       the last finished epoch, for --resume
Every file is written under a temporary name and renamed; the checkpoint folder is swapped in
with one rename, so a killed run leaves the previous complete checkpoint or none.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from adapterkit import backbone
from adapterkit.config import BottleneckConfig, Schedule, check_number, check_settings
from adapterkit.errors import AdapterkitError
from adapterkit.io.atomic import write_json
from adapterkit.model import add_adapter, count_parameters, head_parameters, train_adapter
from adapterkit.precision import check_names as check_precision
from adapterkit.precision import resolve as resolve_precision
from adapterkit.speed import apply_speed_options

ADAPTER_LR, FULL_LR = 1e-3, 5e-5


@dataclass
class TrainConfig(Schedule):
    """One `adapterkit train` run. The optimisation settings (epochs, max_steps, lr, batch_size,
    warmup_ratio, seed) come from adapterkit.config.Schedule, keyword-only."""

    task: str = "cola"
    model: str | None = None  # default: the bundled all-MiniLM-L6-v2
    adapter: BottleneckConfig = field(default_factory=BottleneckConfig)
    full_finetune: bool = False
    lr: float | None = field(default=None, kw_only=True)  # default: 1e-3 for adapters, 5e-5 for full fine-tuning
    max_seq_len: int = 128
    weight_decay: float = 0.0
    data_dir: str | None = None
    output: str | None = None  # default: runs/<task>-<adapter|full>-s<seed>
    resume: bool = False
    init_adapter: str | None = None  # start from a saved adapter (folder or hub:REPO[:TAG])
    attention: str | None = None  # attn_implementation passed to transformers (e.g. "sdpa", "adapterkit_rsa")
    rsa: dict | None = None  # with "adapterkit_rsa": {"density", "block_size", "seed"} (saved: eval rebuilds the layout)
    eval_batch_size: int = 128
    backbone_dropout: bool = False  # dropout inside the frozen backbone (adapter runs)
    strategy: str = "ddp"  # under torchrun: ddp, fsdp, pipeline, pipeline+ddp (see adapterkit.dist)
    compression: str = "none"  # gradient compression: none, fp16, bf16, topk:FRACTION
    bucket_mb: float = 25.0  # gradient bucket size (fusion)
    task_type: str | None = None  # train on files (`data`) as this task type instead of the GLUE `task`
    data: "DataFiles | None" = None  # the user's files and columns (adapterkit.tasks.DataFiles)
    task_options: dict = field(default_factory=dict)  # TaskSpec settings: threshold, doc_stride, ...
    gradient_accumulation_steps: int = 1
    eval_steps: int | None = None  # evaluate every N optimizer steps (default: every epoch)
    early_stopping_patience: int | None = None  # stop after N evaluations without a better main metric
    precision: str = "fp32"  # fp32, bf16 or fp16: autocast with fp32 master weights (adapterkit.precision)
    backbone_dtype: str = "fp32"  # bf16: frozen backbone weights stored in bf16 (needs precision bf16)
    gradient_checkpointing: bool = False  # recompute layer activations in backward (adapterkit.speed)
    compile: bool = False  # torch.compile the model's forward and backward (adapterkit.speed)
    combine: dict | None = None  # `adapterkit fuse`: saved adapters to combine (adapterkit.compose.setup.Combination)
    drop_layers: int = 0  # AdapterDrop: no adapters in the lowest k layers (adapterkit.compose.drop)
    drop_robust: bool = False  # robust AdapterDrop: a random k in 0..drop_layers per training step
    trunk_cache: bool = False  # frozen layers below the lowest adapter computed once (adapterkit.trunk_cache)
    trunk_cache_mb: float = 2048.0  # memory for cached states; beyond it they go to OUTPUT/trunk-cache/

    def __post_init__(self) -> None:
        check_settings(self, optional=("lr",))  # lr None: the default for adapters or full fine-tuning
        check_number("bucket_mb", self.bucket_mb, above=0.0)
        check_number("trunk_cache_mb", self.trunk_cache_mb, minimum=0.0)
        from adapterkit.dist.strategies import strategy_names

        if self.strategy not in strategy_names():
            raise AdapterkitError(f"strategy must be one of {', '.join(strategy_names())}; got {self.strategy!r}")
        from adapterkit.dist.compression import Compression

        try:
            Compression.parse(self.compression)
        except ValueError as e:
            raise AdapterkitError(f"--compression {self.compression!r}: {e}") from None
        if self.task_type is not None:
            if self.data is None:
                raise AdapterkitError(f"task type {self.task_type} needs data files (--train-file)")
            from adapterkit.tasks.registry import get_task_type

            get_task_type(self.task_type)  # refuses an unknown type before any work
        check_precision(self.precision, self.backbone_dtype)
        check_number("drop_layers", self.drop_layers, minimum=0, integer=True)
        if self.drop_robust and not self.drop_layers:
            raise AdapterkitError("--drop-robust draws k in 0..--drop-layers: give --drop-layers K >= 1")
        if self.full_finetune and self.drop_layers:
            raise AdapterkitError("--drop-layers skips adapters; --full-finetune trains none")
        if self.combine is not None:
            from adapterkit.compose.setup import Combination

            Combination(**self.combine)  # refuses bad settings before any work
            if self.data is not None and self.data.test:
                raise AdapterkitError("a test file is not scored for a combination of adapters; score it with "
                                      "`adapterkit eval` after training")
        if self.full_finetune and (self.adapter != BottleneckConfig() or self.init_adapter):
            raise AdapterkitError("--full-finetune trains the whole backbone and no adapter: drop the adapter options "
                                  "(--sharing, --bottleneck, --placement, --layers, --init-adapter, ...)")
        if self.lr is None:
            self.lr = FULL_LR if self.full_finetune else ADAPTER_LR
        if self.output is None:
            kind = "full" if self.full_finetune else f"sharing{self.adapter.sharing}"
            self.output = f"runs/{self.task_type or self.task}-{kind}-s{self.seed}"

    @property
    def adapter_name(self) -> str:
        return (self.task_type or self.task).replace("-", "_")

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["adapter"] = None if self.full_finetune else self.adapter.to_dict()
        return data

    def loop_settings(self):
        from adapterkit.loop import LoopSettings

        names = {f.name for f in dataclasses.fields(LoopSettings)}
        return LoopSettings(**{n: getattr(self, n) for n in names})


def train(cfg: TrainConfig, progress: bool = True, log=print) -> dict:
    """Train, evaluate on the validation split (every epoch or every `eval_steps` steps), keep
    the best; returns the metrics dict.

    The data are read and checked before anything is written. Under torchrun (`adapterkit train
    --nproc N`) every rank builds the same batches and takes its shard of each; rank 0
    evaluates, logs and writes the outputs (adapterkit.dist.runner). A run that fails before its
    first checkpoint removes the output folder it created.
    """
    with _removed_on_failure(Path(cfg.output)):
        return _train(cfg, progress, log)


@contextmanager
def _removed_on_failure(out: Path):
    missing = [p for p in (out, *out.parents) if not p.exists()]  # out and the parents the run will create
    top = missing[-1] if missing and os.environ.get("RANK", "0") == "0" else None
    try:
        yield
    except BaseException:
        if top is not None and top.is_dir() and not (out / "checkpoint").exists():
            shutil.rmtree(top, ignore_errors=True)  # only what this failed run wrote, nothing resumable
        raise


def _train(cfg: TrainConfig, progress: bool, log) -> dict:
    from adapterkit.dist import under_torchrun
    from adapterkit.loop import LocalRunner, fit

    distributed = under_torchrun()
    if distributed:
        from adapterkit.dist.runner import DistRunner, check_distributed

        check_distributed(cfg.full_finetune, cfg.resume, cfg.precision)
    precision = resolve_precision(cfg.precision, "cpu", cfg.backbone_dtype)  # the loop runs on CPU; refused before work
    out = Path(cfg.output)
    _check_output(out, cfg.resume)
    if cfg.drop_layers and not (cfg.adapter.targets or {}).get("layers"):  # a custom layer pattern: checked on the built model
        from adapterkit.compose.drop import check_drop_layers

        check_drop_layers(backbone.skeleton_from_config(backbone.load_config(cfg.model)), cfg.drop_layers)
    tokenizer = backbone.load_tokenizer(cfg.model)
    task = _load_task(cfg, tokenizer)
    torch.manual_seed(cfg.seed)  # every rank initialises adapters and head identically
    model = precision.prepare(_build_model(task, cfg))
    backbone.check_positions(model, cfg.max_seq_len)
    apply_speed_options(model, cfg.gradient_checkpointing, cfg.compile)
    cache = _trunk_cache(model, cfg, precision, out, distributed) if cfg.trunk_cache else None
    runner = DistRunner(model, cfg.strategy, cfg.compression, cfg.bucket_mb) if distributed else \
        LocalRunner(model, precision, trunk_cache=cache)
    if cfg.resume:
        from adapterkit.io.checkpoint import check_resume

        check_resume(out / "checkpoint", model, cfg.full_finetune)  # before run_config.json is rewritten
    if runner.is_main:
        out.mkdir(parents=True, exist_ok=True)
        for note in task.notes:
            log(note)
        write_json(out / "run_config.json", cfg.to_dict() | {"task_spec": task.spec.to_dict()})
        tokenizer.save_pretrained(str(out / "tokenizer"))
    try:
        metrics = fit(model, task, runner, cfg.loop_settings(), out, progress=progress and runner.is_main, log=log)
    finally:
        if cache is not None:
            cache.close()  # removes the on-disk part, also after a failure
    if not metrics:
        return {}  # a worker other than rank 0
    metrics["adapter_parameters"] = None if cfg.full_finetune or cfg.combine else count_parameters(model, task.name)
    metrics["head_parameters"] = sum(p.numel() for p in head_parameters(model).values())
    if task.test is not None:  # the best weights, reloaded as `adapterkit eval` would
        from adapterkit.precision import run_autocast
        from adapterkit.tasks.heads import load_for_inference

        best, _, _, run = load_for_inference(out, note=log)
        with run_autocast(run):
            metrics["test"] = task.evaluate(best, task.test)
        log(f"test {task.metric}: {metrics['test'][task.metric]:.4f}")
    write_json(out / "metrics.json", metrics)
    return metrics


def _load_task(cfg: TrainConfig, tokenizer):
    """The TaskData: a GLUE preset (--task) or the user's files (--task-type, --train-file)."""
    if cfg.task_type is None:
        from adapterkit.tasks.presets import glue_task_data

        return glue_task_data(cfg.task, tokenizer, cfg.max_seq_len, cfg.data_dir, cfg.eval_batch_size)
    from adapterkit.tasks.load import load_task_files

    return load_task_files(cfg.task_type, cfg.data, tokenizer, cfg.max_seq_len, cfg.task_options,
                           cfg.eval_batch_size, seed=cfg.seed, name=cfg.adapter_name)


def _build_model(task, cfg: TrainConfig):
    from adapterkit.tasks.heads import model_for

    model = model_for(task.spec, cfg.model)
    backbone.set_attention(model, cfg.attention, cfg.rsa)
    if cfg.full_finetune:
        return model
    if cfg.combine:
        from adapterkit.compose.setup import Combination, prepare

        prepare(model, Combination(**cfg.combine))
    else:
        if cfg.init_adapter:
            from adapterkit.io import load_adapter

            load_adapter(model, cfg.init_adapter, name=task.name)
        else:
            add_adapter(model, task.name, cfg.adapter)
        train_adapter(model, task.name, backbone_dropout=cfg.backbone_dropout)
    if cfg.drop_layers:
        from adapterkit.compose.drop import check_drop_layers, set_adapter_drop

        k = check_drop_layers(model, cfg.drop_layers)
        # robust: a random k per training step, evaluated with every adapter (k = 0)
        set_adapter_drop(model, 0 if cfg.drop_robust else k, k if cfg.drop_robust else None)
    return model


def _trunk_cache(model, cfg: TrainConfig, precision, out: Path, distributed: bool):
    from adapterkit.trunk_cache import TrunkCache

    for refused, why in ((distributed, "distributed runs (--nproc > 1)"), (cfg.full_finetune, "--full-finetune"),
                         (cfg.compile, "--compile")):
        if refused:
            raise AdapterkitError(f"--trunk-cache does not combine with {why}")
    return TrunkCache(model, precision, memory_mb=cfg.trunk_cache_mb, folder=out / "trunk-cache")


def _check_output(out: Path, resume: bool) -> None:
    """Refuse an output that is a file, under a file, unwritable, or holds a finished run (nothing is created here)."""
    from adapterkit.io.files import check_output

    check_output(out, overwrite=True, folder=True)
    held = ("metrics.json", "checkpoint", "checkpoint.old", "checkpoint.tmp")
    if not resume and any((out / name).exists() for name in held):
        raise AdapterkitError(f"output {out} already holds a run; choose another --output, or pass --resume to continue it")
