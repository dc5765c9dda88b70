"""`adapterkit serve`: one backbone, many adapters, behind an HTTP server (adapterkit.serve)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from adapterkit.cli import options as opt
from adapterkit.errors import AdapterkitError


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    model: opt.ModelOpt = None,
    adapter: Annotated[list[str], typer.Option("--adapter", help="NAME=REF, repeatable; REF: an adapter folder, hub:REPO[:TAG], or BUNDLE#TASK (a task of an `adapterkit multitask` bundle).")] = [],  # noqa: B006
    hub: Annotated[Optional[str], typer.Option("--hub", help="Hub for hub: references: a folder or http://host:port. Default: $ADAPTERKIT_HUB or the user cache.")] = None,
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", help="Most inputs per model step.")] = 32,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", help="Longest wait for a batch to fill after its first input arrived.")] = 5.0,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Inputs that may wait; beyond, requests get 503 + Retry-After.")] = 1024,
    max_adapters: Annotated[int, typer.Option("--max-adapters", help="Adapters resident at once (least recently used ones are unloaded; they reload on use).")] = 256,
    max_memory_mb: Annotated[Optional[float], typer.Option("--max-memory-mb", help="Bound on resident adapter + head weights in MB (default: none, only --max-adapters).")] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Tokens per input. Default: what the model takes.")] = None,
    truncate: Annotated[bool, typer.Option("--truncate/--no-truncate", help="Truncate longer inputs (reported as truncated: true) or refuse them with 413.")] = True,
    threads: Annotated[Optional[int], typer.Option("--threads", help="Torch threads of the model step. Default: torch's choice (the cores).")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to bind.")] = 8080,
    token_file: Annotated[Optional[Path], typer.Option("--token-file", help="File holding the bearer token that load/unload need. Without it they are off.")] = None,
    engine: Annotated[str, typer.Option("--engine", help="local (this process) or ray (Ray Serve, needs adapterkit[ray]).")] = "local",
    replicas: Annotated[int, typer.Option("--replicas", help="With --engine ray: engine replicas.")] = 2,
    precision: opt.InferencePrecisionOpt = "fp32",
) -> None:
    """Serve adapters over HTTP: predict, list, load/unload, health, readiness, Prometheus metrics."""
    from adapterkit.config import check_number
    from adapterkit.serve.engine import EngineConfig

    check_number("--port", port, minimum=1, maximum=65535, integer=True)
    check_number("--replicas", replicas, minimum=1, integer=True)
    refs = parse_adapters(adapter)
    token = read_token(token_file) if token_file else None
    config = EngineConfig(model=model, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue,
                          max_adapters=max_adapters, max_memory_mb=max_memory_mb, max_length=max_length,
                          truncate=truncate, threads=threads, hub=hub,
                          precision=precision)
    if engine == "ray":
        from adapterkit.serve.ray_serve import run as run_ray

        run_ray(config, refs, replicas=replicas, host=host, port=port)
        return
    if engine != "local":
        raise AdapterkitError(f"--engine must be local or ray, got {engine!r}")
    run_local(config, refs, token, host, port)


def run_local(config, refs: dict[str, str], token: str | None, host: str, port: int) -> None:
    import uvicorn

    from adapterkit.serve.app import create_app
    from adapterkit.serve.engine import Engine

    eng = Engine(config)
    for i, (name, ref) in enumerate(refs.items()):
        if config.max_adapters is None or i < config.max_adapters:
            eng.load(name, ref)  # a bad adapter stops the start with its error
        else:
            eng.register(name, ref)  # beyond the cache: loaded on first use
    typer.echo(f"serving {len(refs)} adapters on http://{host}:{port} (docs: /docs, metrics: /metrics)", err=True)
    uvicorn.run(create_app(eng, token), host=host, port=port, log_level="warning", timeout_graceful_shutdown=60)


def parse_adapters(values: list[str]) -> dict[str, str]:
    refs: dict[str, str] = {}
    for value in values:
        name, sep, ref = value.partition("=")
        if not sep or not name or not ref:
            raise AdapterkitError(f"--adapter takes NAME=REF, got {value!r}")
        if name in refs:
            raise AdapterkitError(f"--adapter {name} given twice")
        refs[name] = ref
    return refs


def read_token(path: Path) -> str:
    from adapterkit.io.files import read_text

    token = read_text(path, "a token file", max_bytes=1 << 20).strip()
    if not token:
        raise AdapterkitError(f"--token-file {path} is empty")
    return token


def predict_remote(server: str, adapter: str, rows: list[dict], regression_key: str = "score") -> list[dict]:
    """`adapterkit predict --server URL`: the server's predictions as `adapterkit predict` writes them."""
    from adapterkit.serve.client import Client

    out = []
    with Client(server) as client:
        for start in range(0, len(rows), 256):
            chunk = [{"adapter": adapter, **r} for r in rows[start:start + 256]]
            for p in client.predict(chunk):
                if "value" in p:
                    out.append({regression_key: p["value"]})
                else:
                    out.append({"label": p["label"], "label_id": p["label_id"], "probability": p["scores"][p["label_id"]]})
    return out
