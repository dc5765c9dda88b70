"""Gradient compression for the cross-node phase: none, fp16, bf16, topk (Deep Gradient Compression).

Spec strings (the CLI's --compression):
  none | fp16 | bf16 | topk:FRACTION[,momentum=M][,warmup=STEPS]
fp16 and bf16 cast the whole bucket before any communication, so intra- and cross-node bytes
both halve; gloo in torch >= 2.13 reduces bf16 natively (only the stock `bf16_compress_hook`
refuses gloo, through a backend check), so bf16 bytes are 2 per value, the same as fp16.

topk sends, across nodes only, the FRACTION of entries of largest magnitude of the node's
summed gradient shard as (int32 index, fp32 value) pairs, 8 bytes each, and keeps the rest
as a residual that is added back next step (error feedback; Lin et al. 2018, "Deep Gradient
Compression"). Inside a node the shard is reduced densely (fast links).
  momentum=M   momentum correction: the residual accumulates the velocity u = M u + g instead
               of g, and both are cleared where entries were sent (momentum factor masking).
               The communicated gradient then already carries momentum: train with an
               optimizer without its own momentum (SGD(momentum=0)). Default 0: plain error
               feedback, right for Adam-style optimizers.
  warmup=STEPS the first STEPS steps are sent uncompressed (dense all-reduce). Default 10.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

KINDS = ("none", "fp16", "bf16", "topk")
_DENSE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Compression:
    kind: str = "none"
    fraction: float = 1.0  # topk only: share of entries sent
    momentum: float = 0.0  # topk only: momentum correction factor
    warmup_steps: int = 10  # topk only: dense steps before compressing

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"compression must be one of {KINDS} (topk as topk:FRACTION), got {self.kind!r}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"topk fraction must be in (0, 1], got {self.fraction}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"topk momentum must be in [0, 1), got {self.momentum}")
        if self.warmup_steps < 0:
            raise ValueError(f"topk warmup must be >= 0 steps, got {self.warmup_steps}")

    @classmethod
    def parse(cls, spec: "str | Compression | None") -> "Compression":
        if spec is None or isinstance(spec, Compression):
            return spec or cls()
        kind, _, rest = spec.strip().lower().partition(":")
        if kind != "topk":
            if rest:
                raise ValueError(f"compression {kind!r} takes no arguments, got {spec!r}")
            return cls(kind=kind)
        if not rest:
            raise ValueError("topk needs a fraction, e.g. topk:0.01")
        fraction, *options = rest.split(",")
        kwargs = {}
        for option in options:
            key, _, value = option.partition("=")
            if key not in ("momentum", "warmup"):
                raise ValueError(f"unknown topk option {key!r} in {spec!r} (known: momentum, warmup)")
            kwargs["momentum" if key == "momentum" else "warmup_steps"] = (
                float(value) if key == "momentum" else int(value)
            )
        return cls(kind="topk", fraction=float(fraction), **kwargs)

    @property
    def spec(self) -> str:
        if self.kind != "topk":
            return self.kind
        return f"topk:{self.fraction:g},momentum={self.momentum:g},warmup={self.warmup_steps}"

    @property
    def wire_dtype(self) -> torch.dtype:
        """Dtype of the dense phases (everything but topk's sparse cross-node exchange)."""
        return _DENSE_DTYPES.get(self.kind, torch.float32)

    def k(self, n: int) -> int:
        return max(1, math.ceil(self.fraction * n))


@dataclass
class Residual:
    """Error-feedback state of one compressed shard (one per bucket and rank)."""

    velocity: torch.Tensor  # v: accumulated, not yet sent
    momentum: torch.Tensor | None  # u: momentum-corrected gradient (None when momentum == 0)
    step: int = 0
    sent: int = field(default=0)  # entries sent so far (for tests and stats)

    @classmethod
    def zeros(cls, n: int, momentum: float) -> "Residual":
        return cls(torch.zeros(n), torch.zeros(n) if momentum > 0 else None)

    def accumulate(self, grad: torch.Tensor, momentum: float) -> torch.Tensor:
        """v += g (or u = m u + g; v += u) and return v."""
        self.step += 1
        if self.momentum is None:
            self.velocity.add_(grad)
        else:
            self.momentum.mul_(momentum).add_(grad)
            self.velocity.add_(self.momentum)
        return self.velocity

    def select(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Take the k entries of largest magnitude out of the residual: (indices, values)."""
        idx = self.velocity.abs().topk(k, sorted=False).indices
        values = self.velocity[idx].clone()
        self.velocity[idx] = 0
        if self.momentum is not None:
            self.momentum[idx] = 0  # momentum factor masking
        self.sent += k
        return idx, values

    def clear(self) -> torch.Tensor:
        """Take everything (a dense step): returns v and resets v (and u)."""
        values = self.velocity.clone()
        self.velocity.zero_()
        if self.momentum is not None:
            self.momentum.zero_()
        self.sent += values.numel()
        return values
