"""One transfer run's working set, shared by the feature, instance and baseline algorithms.

`setup(spec)` loads the backbone, the domains (common.load_domains: fixed split, few-shot
target) and returns a `Run`: adapters are added by name, heads are the run's own linear layers on
the mean-pooled sentence feature (see encoder.py), and every algorithm reads as "features of
this batch through these adapters, into this head". Options every algorithm here accepts:

- `source_rows` (int): train rows kept per source domain (seeded by spec.seed); default all.
- `top_n` (int): adapt only the top N layers; the frozen layers below are then computed once
  per row and cached (exact, and several times faster on CPU). Default: every layer.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from adapterkit.config import BottleneckConfig
from adapterkit.errors import AdapterkitError
from adapterkit.model import add_adapter, adapter_parameters, get_bank, plan_adapter, set_backbone_dropout
from adapterkit.transfer.common import DomainData, load_domains, make_model, steps_for
from adapterkit.transfer.encoder import Encoder
from adapterkit.transfer.registry import TransferSpec

COMMON_OPTIONS = {"source_rows": None, "top_n": None}


def options(spec: TransferSpec, defaults: dict) -> dict:
    """spec.options over `defaults` (+ COMMON_OPTIONS); unknown keys are an error."""
    known = {**COMMON_OPTIONS, **defaults}
    unknown = sorted(set(spec.options) - set(known))
    if unknown:
        raise AdapterkitError(f"unknown option(s) {unknown}; this algorithm takes {sorted(known)}")
    return {**known, **spec.options}


@dataclass
class Run:
    """The backbone with its adapters, the run's heads, the encoder and the prepared domain rows."""

    spec: TransferSpec
    model: nn.Module
    encoder: Encoder
    data: dict[str, DomainData]
    config: BottleneckConfig
    tokenizer: object
    heads: nn.ModuleDict = field(default_factory=nn.ModuleDict)

    @property
    def target(self) -> DomainData:
        return self.data[self.spec.target]

    @property
    def sources(self) -> list[str]:
        return list(self.spec.source)

    @property
    def hidden(self) -> int:
        return self.model.config.hidden_size

    # --- parts ------------------------------------------------------------------------------
    def add_adapters(self, *names: str) -> None:
        for name in names:
            add_adapter(self.model, name, self.config, activate=False)
            set_backbone_dropout(self.model, False)  # the frozen backbone is a fixed function
            for p in adapter_parameters(self.model, name).values():
                p.requires_grad_(True)

    def add_heads(self, *names: str, num_labels: int = 2) -> None:
        for name in names:
            self.heads[name] = nn.Linear(self.hidden, num_labels)

    def params(self, adapters: list[str], *modules: nn.Module) -> list[nn.Parameter]:
        out = [p for name in adapters for p in adapter_parameters(self.model, name).values()]
        return out + [p for m in (self.heads, *modules) for p in m.parameters()]

    def steps(self, n_rows: int) -> int:
        return steps_for(n_rows, self.spec)

    # --- forward ----------------------------------------------------------------------------
    def features(self, batch: dict, adapters: list[str], composition: str = "stack") -> torch.Tensor:
        return self.encoder.features(batch, adapters, composition)

    def loss(self, batch: dict, adapters: list[str], head: str, composition: str = "stack") -> torch.Tensor:
        return F.cross_entropy(self.heads[head](self.features(batch, adapters, composition)), batch["labels"])

    def stream(self, rows: list[dict], offset: int = 0) -> Iterator[dict]:
        """Endless batches of `rows`, reshuffled every pass."""
        for epoch in count():
            yield from self.encoder.batches(rows, self.spec.batch_size, seed=self.spec.seed * 1000 + offset + epoch)

    def source_stream(self, rows: dict[str, list[dict]] | None = None) -> Iterator[tuple[str, dict]]:
        """(domain, batch) round robin over the source domains, each from its own endless stream."""
        rows = rows or {d: self.data[d].train for d in self.sources}
        streams = {d: self.stream(r, offset=100 * (i + 1)) for i, (d, r) in enumerate(rows.items()) if r}
        if not streams:  # a loop over zero streams would spin forever
            raise AdapterkitError("no source rows to train on: give source domains (--source) that hold rows")
        while True:
            for domain, stream in streams.items():
                yield domain, next(stream)

    @torch.inference_mode()
    def logits(self, rows: list[dict], adapters: list[str], head: str, composition: str = "stack") -> torch.Tensor:
        self.model.eval()
        out = torch.empty(len(rows), self.heads[head].out_features)
        for batch in self.encoder.batches(rows, 64, seed=None):
            out[batch["_rows"]] = self.heads[head](self.features(batch, adapters, composition)).float()
        self.model.train()
        return out

    def score(self, rows: list[dict], adapters: list[str], head: str, composition: str = "stack") -> dict:
        from adapterkit.metrics import accuracy, f1

        preds = self.logits(rows, adapters, head, composition).argmax(-1).numpy()
        labels = torch.tensor([r["labels"] for r in rows]).numpy()
        return {"accuracy": accuracy(preds, labels), "f1": f1(preds, labels)}

    def result(self, adapters: list[str], head: str, composition: str = "stack", **extra) -> dict:
        """Target test metrics (+ `extra`), and the trained parts saved under spec.output."""
        out = {"test": self.score(self.target.test, adapters, head, composition), **extra}
        if self.spec.output:
            self.save(Path(self.spec.output))
        return out

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        from adapterkit.io import save_adapter

        for name in get_bank(self.model).adapters:
            save_adapter(self.model, name, folder / "adapters" / name, include_head=False)
        folder.mkdir(parents=True, exist_ok=True)
        heads = {k: v.detach().contiguous() for k, v in self.heads.state_dict().items()}
        save_file(heads, str(folder / "heads.safetensors"))


def setup(spec: TransferSpec, defaults: dict | None = None) -> tuple[Run, dict]:
    """The model, encoder and data of one run, and the algorithm's options."""
    opts = options(spec, defaults or {})
    torch.manual_seed(spec.seed)
    model, tokenizer = make_model(spec)
    for p in model.parameters():
        p.requires_grad_(False)
    config = BottleneckConfig(bottleneck_dim=spec.bottleneck_dim, sharing=spec.sharing, top_n=opts["top_n"])
    # with top_n, the layers below the first adapted one are a fixed function: cache them
    split = min(site.layer for site in plan_adapter(model, config).sites) if opts["top_n"] else None
    encoder = Encoder(model, tokenizer.pad_token_id, split)
    data = _load_domains(spec, tokenizer)
    data = {name: _prepare(encoder, d, spec, opts, is_target=name == spec.target) for name, d in data.items()}
    return Run(spec, model, encoder, data, config, tokenizer), opts


_LOADED: dict[tuple, dict[str, DomainData]] = {}  # the last few specs' encoded domains


def _load_domains(spec: TransferSpec, tokenizer) -> dict[str, DomainData]:
    """common.load_domains, remembered per process for the last 4 data settings (a benchmark
    runs every algorithm on the same data; loading and tokenizing dominates small runs)."""
    key = (tuple(spec.source), spec.target, spec.target_shots, spec.seed, spec.quick, spec.max_seq_len,
           spec.data_dir, str(spec.model), getattr(tokenizer, "name_or_path", None))
    if key not in _LOADED:
        while len(_LOADED) >= 4:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = _read_domains(spec, tokenizer)
    return _LOADED[key]


def _read_domains(spec: TransferSpec, tokenizer) -> dict[str, DomainData]:
    """Amazon domains (and sst2) through common.load_domains; with a GLUE task among the names,
    every name through meta_tasks (a GLUE task's test split is its dev file)."""
    from adapterkit.data import DOMAINS

    if all(name in DOMAINS or name == "sst2" for name in [*spec.source, spec.target]):
        return load_domains(spec, tokenizer)
    from adapterkit.transfer.meta_tasks import load_meta_tasks

    return {name: DomainData(name, t.train, t.dev, t.test) for name, t in load_meta_tasks(spec, tokenizer).items()}


def _prepare(encoder: Encoder, data: DomainData, spec: TransferSpec, opts: dict, is_target: bool) -> DomainData:
    if is_target:
        return DomainData(data.name, *(encoder.prepare(rows) for rows in (data.train, data.dev, data.test)))
    train = data.train
    if opts["source_rows"] and len(train) > opts["source_rows"]:
        train = random.Random(f"{spec.seed}/{data.name}").sample(train, opts["source_rows"])
    return DomainData(data.name, encoder.prepare(train), [], [])  # source dev/test are not used
