"""Shared pieces of the serving tests: adapters saved on the tiny BERT of conftest (random,
non-zero weights; heads with 2 and 3 labels and a regression head), a foreign adapter (another
hidden size), a corrupt one, and real servers on 127.0.0.1 (uvicorn in a thread, or a
`python -m adapterkit.cli serve` subprocess). No tests here."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "serve-token-7c1e"
# name -> (sharing, bottleneck, placement, task)
ADAPTERS = {
    "cola": (3, 8, "houlsby", {"type": "classification", "labels": ["unacceptable", "acceptable"]}),
    "topic": (1, 4, "pfeiffer", {"type": "classification", "labels": ["world", "sports", "tech"]}),
    "stsb": ("none", 6, "houlsby", {"type": "regression", "labels": None}),
}


def save_adapter(model_dir: Path, out: Path, name: str, sharing, bottleneck: int, placement: str, task: dict,
                 seed: int = 0, hidden: int | None = None) -> Path:
    import adapterkit as ak
    from adapterkit.backbone import load_model
    from adapterkit.model import get_bank, head_parameters

    model = load_model(str(model_dir), num_labels=len(task["labels"] or [0]))
    ak.add_adapter(model, name, ak.BottleneckConfig(bottleneck_dim=bottleneck, sharing=sharing, placement=placement))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in [*get_bank(model).adapters[name].parameters(), *head_parameters(model).values()]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    ak.save_adapter(model, name, out, task=task)
    return out


def make_adapters(model_dir: Path, root: Path) -> dict[str, Path]:
    return {name: save_adapter(model_dir, root / name, name, *spec, seed=i) for i, (name, spec) in enumerate(ADAPTERS.items())}


def foreign_adapter(root: Path) -> Path:
    """An adapter saved on a BERT of hidden size 48: does not fit the tiny BERT (32)."""
    from transformers import BertConfig, BertForSequenceClassification

    folder = root / "foreign-model"
    config = BertConfig(vocab_size=100, hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    BertForSequenceClassification(config).save_pretrained(str(folder))
    return save_adapter(folder, root / "foreign", "foreign", 1, 4, "houlsby", ADAPTERS["cola"][3])


def corrupt_adapter(source: Path, root: Path) -> Path:
    import shutil

    folder = root / "corrupt"
    shutil.copytree(source, folder)
    weights = folder / "adapterkit_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """create_app(engine) under uvicorn in a thread of the test process."""

    def __init__(self, engine, token: str | None = TOKEN) -> None:
        import uvicorn

        from adapterkit.serve.app import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(engine, token), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_ready(self.url)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def wait_ready(url: str, timeout: float = 300, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} not ready after {timeout} s")


def start_process(model_dir: Path, adapters: dict[str, Path], *flags: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "hub"), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-m", "adapterkit.cli", "serve", "--model", str(model_dir), "--port", str(port), *flags]
    for name, folder in adapters.items():
        args += ["--adapter", f"{name}={folder}"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc=proc)
    except Exception:
        proc.kill()
        raise
    return proc, url
