"""The serving engine: one frozen backbone, many adapters, batches that mix them.

    engine = Engine(EngineConfig(model="all-MiniLM-L6-v2"), adapters={"cola": "runs/cola", "sst2": "hub:team/sst2:v1"})
    engine.predict([{"adapter": "cola", "text": "The book was read."}, {"adapter": "sst2", "text": "great!"}])
    engine.close()

Flow of one input: `submit` tokenizes it in the caller's thread (outside the model step), checks
the adapter is registered (else UnknownAdapter) and appends it to a bounded queue (full: QueueFull,
the caller retries later; nothing is dropped silently). One model thread takes up to
`max_batch_size` inputs, waiting at most `max_wait_ms` after the oldest arrived, makes their
adapters resident (loading on first use, evicting the least recently used adapters beyond
`max_adapters` / `max_memory_mb`, never one the batch uses), and runs a single routed forward
(adapterkit.routing: every row through its own adapter and head). Every change to the model
(loading, eviction, unloading) happens in that thread between steps, so a step never sees a
half-changed model; an input whose adapter was unloaded before its step fails with UnknownAdapter,
inputs already in a step finish.

Threads: torch's intra-op pool (`threads`, default: what torch chose, i.e. the cores) serves the
model step; tokenizers run in the callers' threads (the server's thread pool) and release the GIL,
so tokenizing the next inputs overlaps the current step.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from adapterkit.errors import AdapterkitError
from adapterkit.precision import model_device_type, resolve
from adapterkit.serve.cache import ResidentCache
from adapterkit.serve.errors import (AdapterLoadError, EngineClosed, InputTooLong, QueueFull, ServeError,
                                     UnknownAdapter)
from adapterkit.serve.metrics import ServeMetrics

TASK_TYPES = ("classification", "regression")


@dataclass
class EngineConfig:
    model: str | None = None  # backbone (default: the bundled all-MiniLM-L6-v2)
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 1024  # inputs waiting; beyond: QueueFull (HTTP 503 + Retry-After)
    max_adapters: int | None = 256  # resident adapters
    max_memory_mb: float | None = None  # bytes of resident adapter + head weights
    max_length: int | None = None  # tokens per input (default: what the model takes)
    truncate: bool = True  # longer inputs: truncated (and reported) if True, else InputTooLong (413)
    threads: int | None = None
    hub: str | None = None  # for hub: references (default: $ADAPTERKIT_HUB or the user cache)
    precision: str = "fp32"  # model steps under this autocast; fp32 with a note where not native

    def __post_init__(self) -> None:
        from adapterkit.config import check_number
        from adapterkit.precision import check_names

        check_names(self.precision)
        for name in ("max_batch_size", "max_queue"):
            check_number(name, getattr(self, name), minimum=1, integer=True)
        check_number("max_wait_ms", self.max_wait_ms, minimum=0.0)  # NaN or inf would stall every batch
        for name in ("max_adapters", "threads"):
            if getattr(self, name) is not None:
                check_number(name, getattr(self, name), minimum=1, integer=True)
        if self.max_length is not None:
            check_number("max_length", self.max_length, minimum=2, integer=True)
        if self.max_memory_mb is not None:
            check_number("max_memory_mb", self.max_memory_mb, above=0.0)


@dataclass
class _Request:
    adapter: str
    encoded: dict
    truncated: bool
    future: Future
    arrived: float = field(default_factory=time.perf_counter)


@dataclass
class _Resident:
    head: object  # nn.Module
    task: dict  # {"type", "labels"}
    bytes: int


class Engine:
    def __init__(self, config: EngineConfig | None = None, adapters: dict[str, str] | None = None,
                 model=None, tokenizer=None) -> None:
        import torch

        from adapterkit import backbone

        self.config = config = config or EngineConfig()
        if config.threads:
            torch.set_num_threads(config.threads)
        self.model = model if model is not None else backbone.load_model(config.model, num_labels=2)
        self.model.eval().requires_grad_(False)
        self.precision = resolve(config.precision, model_device_type(self.model), training=False, note=_note)
        self.tokenizer = tokenizer if tokenizer is not None else backbone.load_tokenizer(config.model)
        if config.max_length:
            backbone.check_positions(self.model, config.max_length, flag="--max-length")
        self.max_length = config.max_length or _model_max_length(self.model, self.tokenizer)
        self.metrics = ServeMetrics()
        max_bytes = int(config.max_memory_mb * 2**20) if config.max_memory_mb else None
        self.cache = ResidentCache(config.max_adapters, max_bytes)
        self._refs: dict[str, str] = {}
        self._residents: dict[str, _Resident] = {}
        self._pending: deque[_Request] = deque()
        self._control: deque[tuple] = deque()
        self._cv = threading.Condition()
        self._closing = False
        self._worker = threading.Thread(target=self._loop, name="adapterkit-engine", daemon=True)
        self._worker.start()
        for name, ref in (adapters or {}).items():
            self.register(name, ref)

    # --- registry ---------------------------------------------------------------------------------
    def register(self, name: str, ref: str) -> None:
        """Make adapter `ref` (a folder, hub:REPO[:TAG], or BUNDLE#TASK) servable as `name`; loads on first use."""
        if not name.isidentifier():
            raise AdapterkitError(f"adapter name must be a Python identifier, got {name!r}")
        with self._cv:
            self._refs[name] = str(ref)
            self.metrics.registered.set(len(self._refs))

    def load(self, name: str, ref: str | None = None, timeout: float | None = 300) -> dict:
        """Register (when `ref` is given) and load now; AdapterLoadError if its files are corrupt or it
        does not fit the backbone (it is then not registered). Returns its description."""
        if ref is None and name not in self._refs:
            raise UnknownAdapter(name)
        return self._call("load", name, ref, timeout=timeout)

    def unload(self, name: str, timeout: float | None = 300) -> None:
        """Forget adapter `name`: new inputs for it get UnknownAdapter, queued ones fail with it,
        inputs already in a model step finish; its weights leave the model before the next step."""
        with self._cv:
            if name not in self._refs:
                raise UnknownAdapter(name)
            del self._refs[name]
            self.metrics.registered.set(len(self._refs))
        self._call("evict", name, None, timeout=timeout)

    def evict(self, name: str) -> None:
        """Take adapter `name` out of the model (it stays registered and reloads on next use); does not wait."""
        self._call("evict", name, None, timeout=None, wait=False)

    def adapters(self) -> list[dict]:
        with self._cv:
            refs, residents = dict(self._refs), dict(self._residents)
        return [{"name": n, "ref": r, "resident": n in residents, **(residents[n].task if n in residents else {})}
                for n, r in refs.items()]

    # --- predicting -------------------------------------------------------------------------------
    def submit(self, adapter: str, text: str, text_pair: str | None = None) -> Future:
        """Queue one input; the future resolves to its prediction (a dict) or raises a ServeError."""
        return self.submit_many([{"adapter": adapter, "text": text, "text_pair": text_pair}])[0]

    def submit_many(self, inputs: list[dict]) -> list[Future]:
        """Queue all of `inputs` or none: UnknownAdapter, InputTooLong, QueueFull or EngineClosed
        are raised before any of them is queued."""
        if self._closing:
            raise EngineClosed("the engine is shutting down")
        for item in inputs:
            if item["adapter"] not in self._refs:
                raise UnknownAdapter(item["adapter"])
        start = time.perf_counter()
        requests = []
        for item in inputs:
            encoded, truncated = self._tokenize(item["text"], item.get("text_pair"))
            requests.append(_Request(item["adapter"], encoded, truncated, Future()))
        if inputs:
            self.metrics.tokenize_seconds.observe((time.perf_counter() - start) / len(inputs))
        with self._cv:
            if self._closing:
                raise EngineClosed("the engine is shutting down")
            if len(self._pending) + len(requests) > self.config.max_queue:
                self.metrics.inputs.labels("rejected").inc(len(requests))
                raise QueueFull(f"queue full ({len(self._pending)} of {self.config.max_queue} inputs waiting); retry later")
            self._pending.extend(requests)
            self.metrics.queue_depth.set(len(self._pending))
            self._cv.notify_all()
        return [r.future for r in requests]

    def predict(self, inputs: list[dict], timeout: float | None = None) -> list[dict]:
        """Predictions for [{"adapter": ..., "text": ..., "text_pair": ...}, ...], in order."""
        return [f.result(timeout) for f in self.submit_many(inputs)]

    def close(self, drain: bool = True, timeout: float | None = 60) -> None:
        """Stop taking inputs; with drain, finish the queued ones first; then stop the model thread."""
        with self._cv:
            self._closing = True
            if not drain:
                while self._pending:
                    self._pending.popleft().future.set_exception(EngineClosed("the engine shut down"))
            self._cv.notify_all()
        self._worker.join(timeout)

    @property
    def ready(self) -> bool:
        return self._worker.is_alive() and not self._closing

    def queue_depth(self) -> int:
        return len(self._pending)

    # --- tokenization (callers' threads) ----------------------------------------------------------
    def _tokenize(self, text: str, text_pair: str | None) -> tuple[dict, bool]:
        encoded = self.tokenizer(text, text_pair, truncation=False, verbose=False)
        n = len(encoded["input_ids"])
        if n <= self.max_length:
            return dict(encoded), False
        if not self.config.truncate:
            raise InputTooLong(f"input has {n} tokens; this server takes at most {self.max_length} (truncation is off)")
        return dict(self.tokenizer(text, text_pair, truncation=True, max_length=self.max_length)), True

    # --- the model thread -------------------------------------------------------------------------
    def _call(self, op: str, name: str, ref: str | None, timeout: float | None, wait: bool = True):
        future: Future = Future()
        with self._cv:
            if self._closing:
                raise EngineClosed("the engine is shutting down")
            self._control.append((op, name, ref, future))
            self._cv.notify_all()
        return future.result(timeout) if wait else None

    def _loop(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self._cv:
                    while not (self._pending or self._control or self._closing):
                        self._cv.wait()
                    control = list(self._control)
                    self._control.clear()
                for op, name, ref, future in control:
                    self._run_control(op, name, ref, future)
                batch = self._take_batch()
                if batch:
                    self._step(batch)
                with self._cv:
                    if self._closing and not self._pending and not self._control:
                        return

    def _run_control(self, op: str, name: str, ref: str | None, future: Future) -> None:
        try:
            if op == "evict":
                self._evict(name, evicted=False)
                future.set_result(None)
                return
            old = self._refs.get(name)
            if name in self._residents and ref is not None and old != ref:
                self._evict(name, evicted=False)  # replacing an adapter under the same name
            if name not in self._residents:
                self._make_resident(name, ref or old, pinned=())
            with self._cv:
                self._refs[name] = ref or old
                self.metrics.registered.set(len(self._refs))
            future.set_result(next(a for a in self.adapters() if a["name"] == name))
        except Exception as e:
            future.set_exception(e)

    def _take_batch(self) -> list[_Request]:
        cfg = self.config
        with self._cv:
            if not self._pending:
                return []
            deadline = self._pending[0].arrived + cfg.max_wait_ms / 1000
            while len(self._pending) < cfg.max_batch_size and not self._closing and not self._control:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cv.wait(left)
            batch, names, skipped = [], set(), deque()
            while self._pending and len(batch) < cfg.max_batch_size:
                request = self._pending.popleft()
                if cfg.max_adapters is not None and request.adapter not in names and len(names) >= cfg.max_adapters:
                    skipped.append(request)  # more distinct adapters than fit: the next step takes it
                    continue
                names.add(request.adapter)
                batch.append(request)
            self._pending.extendleft(reversed(skipped))
            self.metrics.queue_depth.set(len(self._pending))
            registered = dict(self._refs)
        now = time.perf_counter()
        kept = []
        for request in batch:
            self.metrics.queue_seconds.observe(now - request.arrived)
            if request.adapter not in registered:
                self._fail(request, UnknownAdapter(request.adapter, "adapter was unloaded:"))
            else:
                kept.append(request)
        for name in [n for n in self._residents if n not in registered]:
            self._evict(name, evicted=False)
        return kept

    def _step(self, batch: list[_Request]) -> None:
        from adapterkit.routing import forward_rows

        names = list(dict.fromkeys(r.adapter for r in batch))
        for name in names:
            if self.cache.touch(name):
                self.metrics.cache.labels("hit").inc()
                continue
            self.metrics.cache.labels("miss").inc()
            try:
                self._make_resident(name, self._refs.get(name), pinned=names)
            except Exception as e:
                error = e if isinstance(e, ServeError) else AdapterLoadError(str(e))
                for r in [r for r in batch if r.adapter == name]:
                    self._fail(r, error)
                batch = [r for r in batch if r.adapter != name]
        if not batch:
            return
        start = time.perf_counter()
        try:
            inputs = _collate([r.encoded for r in batch], self.tokenizer.pad_token_id or 0)
            heads = {n: self._residents[n].head for n in {r.adapter for r in batch}}
            with self.precision.autocast():
                logits = forward_rows(self.model, inputs, [r.adapter for r in batch], heads)
        except Exception as e:  # a bug, not the user's: every input of the step fails with it
            for r in batch:
                self._fail(r, ServeError(f"model step failed: {e}"))
            return
        self.metrics.step_seconds.observe(time.perf_counter() - start)
        self.metrics.batch_size.observe(len(batch))
        self.metrics.batch_adapters.observe(len({r.adapter for r in batch}))
        for r, row in zip(batch, logits):
            r.future.set_result(_decode(r, row, self._residents[r.adapter].task))
            self.metrics.inputs.labels("ok").inc()

    def _fail(self, request: _Request, error: Exception) -> None:
        self.metrics.inputs.labels("failed").inc()
        request.future.set_exception(error)

    def _make_resident(self, name: str, ref: str | None, pinned) -> None:
        from adapterkit.serve.loading import load_into

        if ref is None:
            raise UnknownAdapter(name)
        start = time.perf_counter()
        estimate = _estimate_bytes(ref)
        if not self.cache.fits_alone(estimate):
            raise AdapterLoadError(f"adapter {name!r} ({estimate / 2**20:.1f} MB) is larger than the memory budget")
        for victim in self.cache.victims(estimate, pinned):
            self._evict(victim)
        try:
            head, task, size = load_into(self.model, name, ref, self.config.hub)
        except ServeError:
            raise
        except Exception as e:
            raise AdapterLoadError(f"adapter {name!r} ({ref}) could not be loaded: {e}") from None
        with self._cv:
            self._residents[name] = _Resident(head, task, size)
        for victim in self.cache.victims(size, [*pinned, name]):  # the estimate was the files' size
            self._evict(victim)
        self.cache.add(name, size)
        self.metrics.load_seconds.observe(time.perf_counter() - start)
        self._update_gauges()

    def _evict(self, name: str, evicted: bool = True) -> None:
        from adapterkit.model import list_adapters, remove_adapter

        if name in list_adapters(self.model):
            remove_adapter(self.model, name)
        with self._cv:
            self._residents.pop(name, None)
        if name in self.cache:
            self.cache.remove(name, evicted)
            if evicted:
                self.metrics.cache.labels("eviction").inc()
        self._update_gauges()

    def _update_gauges(self) -> None:
        self.metrics.resident.set(len(self.cache))
        self.metrics.resident_bytes.set(self.cache.bytes)


def _collate(rows: list[dict], pad_id: int) -> dict:
    import torch

    longest = max(len(r["input_ids"]) for r in rows)
    out = {}
    for key in rows[0]:
        pad = pad_id if key == "input_ids" else 0
        out[key] = torch.tensor([r[key] + [pad] * (longest - len(r[key])) for r in rows])
    return out


def _decode(request: _Request, logits, task: dict) -> dict:
    out = {"adapter": request.adapter, "truncated": request.truncated}
    if task["type"] == "regression":
        return out | {"value": float(logits[0])}
    probs = logits.float().softmax(-1)
    k = int(probs.argmax())
    return out | {"label": task["labels"][k], "label_id": k, "scores": [float(p) for p in probs]}


def _note(text: str) -> None:
    print(text, file=sys.stderr)


def _estimate_bytes(ref: str) -> int:
    """Size of an adapter's weight files (0 if not a local folder yet, e.g. a hub reference)."""
    folder = Path(ref.split("#")[0])
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def _model_max_length(model, tokenizer) -> int:
    limits = [getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limits = [n for n in limits if isinstance(n, int) and 0 < n < 1_000_000]
    return min(limits) if limits else 512
