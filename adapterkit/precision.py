"""Numeric precision of training and inference, decided in one place.

`--precision fp32|bf16|fp16` (and `TrainConfig(precision=...)`) means, for every command:
  fp32   no autocast: the reference.
  bf16   activations under `torch.autocast(device, torch.bfloat16)`; the trained parameters
         (adapters and head, or every weight with full fine-tuning) stay fp32 master weights and
         the optimizer state stays fp32.
  fp16   the same with float16, plus a `torch.amp.GradScaler` (loss scaling) on CUDA.
Where it runs natively: CUDA bf16 where `torch.cuda.is_bf16_supported()`, CUDA fp16 always; CPU
bf16 with avx512_bf16 or AMX, CPU fp16 with AMX-FP16. Elsewhere torch would emulate the format,
slower than fp32: training refuses with one line (choose fp32), while eval/predict of a run
trained on another machine fall back to fp32 with a printed note (the saved weights are fp32,
so fp32 is the reference result).

`--backbone-dtype bf16` stores the frozen parameters (those without gradients: the backbone
of an adapter run) in bfloat16, halving their memory; it needs `--precision bf16`, so every op
sees one dtype. Both choices are saved in run_config.json and reused by eval/predict.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass

from adapterkit.errors import AdapterkitError

PRECISIONS = ("fp32", "bf16", "fp16")
BACKBONE_DTYPES = ("fp32", "bf16")


def check_names(precision: str, backbone_dtype: str = "fp32") -> None:
    """Refuse unknown names and combinations (no torch needed: configs call this)."""
    if precision not in PRECISIONS:
        raise AdapterkitError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if backbone_dtype not in BACKBONE_DTYPES:
        raise AdapterkitError(f"backbone dtype must be one of {', '.join(BACKBONE_DTYPES)}; got {backbone_dtype!r}")
    if backbone_dtype == "bf16" and precision != "bf16":
        raise AdapterkitError("--backbone-dtype bf16 needs --precision bf16 (the frozen weights and the "
                              "activations must share one dtype)")


def native_support(precision: str, device_type: str) -> tuple[bool, str]:
    """(whether `precision` runs natively on this device, why not if it does not)."""
    import torch

    if precision == "fp32":
        return True, ""
    if device_type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            return False, f"this GPU ({torch.cuda.get_device_name()}) has no bf16"
        return True, ""
    if device_type != "cpu":
        return False, f"mixed precision is implemented for cpu and cuda, not {device_type}"
    cpu = torch.cpu
    if precision == "bf16":
        ok = _flag(cpu, "_is_avx512_bf16_supported") or _flag(cpu, "_is_amx_tile_supported")
        return ok, "" if ok else "this CPU has neither avx512_bf16 nor AMX, so bf16 would be emulated (slower than fp32)"
    ok = _flag(cpu, "_is_amx_fp16_supported")
    return ok, "" if ok else "this CPU has no AMX-FP16, so fp16 would be emulated (slower than fp32); bf16 or a GPU serve"


def _flag(module, name: str) -> bool:
    probe = getattr(module, name, None)
    return bool(probe and probe())


@dataclass(frozen=True)
class Precision:
    """A resolved precision: autocast, loss scaling and the frozen weights' dtype."""

    name: str = "fp32"
    device_type: str = "cpu"
    backbone_dtype: str = "fp32"

    def __post_init__(self) -> None:
        check_names(self.name, self.backbone_dtype)

    @property
    def dtype(self):
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    def autocast(self):
        """The context the forward pass (and the loss) runs under."""
        import torch

        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def prepare(self, model, trained=None):
        """Store the frozen parameters in the backbone dtype: every floating-point parameter
        except `trained` (default: those with requires_grad, so call it after freezing)."""
        import torch

        if self.backbone_dtype == "bf16":
            keep = {id(p) for p in trained} if trained is not None else \
                {id(p) for p in model.parameters() if p.requires_grad}
            frozen = [p for p in model.parameters() if id(p) not in keep and p.is_floating_point()]
            if not frozen:
                raise AdapterkitError("--backbone-dtype bf16 stores the frozen backbone, and this model has "
                                      "none (full fine-tuning trains every weight)")
            for p in frozen:
                p.data = p.data.to(torch.bfloat16)
        return model

    def trainer(self) -> "LossStep":
        return LossStep(self)

    def to_dict(self) -> dict:
        return {"precision": self.name, "backbone_dtype": self.backbone_dtype}


class LossStep:
    """backward + optimizer step, with loss scaling where the precision needs it (CUDA fp16)."""

    def __init__(self, precision: Precision) -> None:
        import torch

        self.scaler = None
        if precision.name == "fp16" and precision.device_type == "cuda":
            self.scaler = torch.amp.GradScaler("cuda")

    def backward(self, loss) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)  # skipped when the scaled gradients overflowed
            self.scaler.update()
        else:
            optimizer.step()


def resolve(precision: str = "fp32", device_type: str = "cpu", backbone_dtype: str = "fp32",
            training: bool = True, note=print) -> Precision:
    """The precision to run with: refused for training where not native, fp32 with a note for
    inference (see the module docstring)."""
    check_names(precision, backbone_dtype)
    ok, why = native_support(precision, device_type)
    if ok:
        return Precision(precision, device_type, backbone_dtype)
    if training:
        raise AdapterkitError(f"--precision {precision}: {why}; use --precision fp32")
    note(f"note: --precision {precision} requested, but {why}: running in fp32")
    return Precision("fp32", device_type, "fp32")


def autocast_for(precision: str = "fp32", device_type: str = "cpu", training: bool = True, note=print):
    """The autocast context of a command that runs on `device_type`: `resolve`d first, so an
    unsupported precision is refused (training) or replaced by fp32 with a note (inference)."""
    return resolve(precision, device_type, training=training, note=note).autocast()


def under_precision(config_arg: str):
    """Decorator: run the function under the autocast of its argument `config_arg`'s `.precision`
    (a dataclass config: TransferSpec, KDConfig, MultiTaskConfig), on CPU, for training."""
    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args, **kwargs):
            config = signature.bind(*args, **kwargs).arguments[config_arg]
            with autocast_for(getattr(config, "precision", "fp32")):
                return fn(*args, **kwargs)

        return run

    return decorate


def model_device_type(model) -> str:
    return next(model.parameters()).device.type


def run_autocast(run: dict, device_type: str = "cpu"):
    """The autocast of a loaded run (`load_run`'s run_config, precision already resolved)."""
    return Precision(run.get("precision", "fp32"), device_type, run.get("backbone_dtype", "fp32")).autocast()
