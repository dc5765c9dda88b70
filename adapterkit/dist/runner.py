"""The training loop's distributed path (adapterkit.loop.fit with a DistRunner under torchrun).

Every rank builds the same batches and takes its shard of each; the strategy (ddp, fsdp,
pipeline) does forward, backward and gradient sync; rank 0 evaluates, logs and writes.
"""
from __future__ import annotations

from pathlib import Path

from adapterkit.errors import AdapterkitError


class DistRunner:
    def __init__(self, model, strategy: str, compression: str, bucket_mb: float):
        from adapterkit import dist as akd

        akd.init_distributed()
        self.is_main = akd.is_main_process()
        config = akd.DistConfig(compression=compression, bucket_mb=bucket_mb)
        self.run = akd.wrap_for_strategy(model, strategy, config)

    def parameters(self):
        return self.run.parameters()

    def step(self, batch: dict) -> float:
        return self.run.step(self.run.shard(batch))

    def optimizer_step(self, optimizer) -> None:
        optimizer.step()

    def evaluate(self, fn):
        with self.run.eval_model() as model:
            result = fn(model) if model is not None else None
        return self.broadcast(result)

    def broadcast(self, value):
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def save_best(self, name: str, out: Path, full_finetune: bool, task_meta: dict) -> None:
        self.run.save_adapter(name, out, task=task_meta)

    def checkpoint(self, *args, **kwargs) -> None:
        pass  # --resume is refused for distributed runs

    def finish(self, out: Path) -> None:
        self.run.write_stats(out)


def check_distributed(full_finetune: bool, resume: bool, precision: str = "fp32") -> None:
    """Refuse what the distributed path does not support, before any work."""
    if precision != "fp32":
        raise AdapterkitError("--precision bf16/fp16 is not supported for distributed runs yet; use --precision fp32")
    if full_finetune:
        raise AdapterkitError("distributed training (--nproc > 1) trains adapters; drop --full-finetune")
    if resume:
        raise AdapterkitError("--resume is not supported for distributed runs yet")
