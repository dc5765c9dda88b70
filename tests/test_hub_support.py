"""Shared pieces of the hub tests: adapter folders written by hand, a real hub server on
loopback (a uvicorn subprocess, `python -m adapterkit_hub`), and a `hub` fixture that runs each
behavioural test once against a folder store and once against the server. No tests here."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from safetensors.numpy import save_file

from adapterkit.hub import FolderStore, HttpStore

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token-5b1d"
LIMIT_BYTES = 64 << 10  # both stores refuse files over 64 KiB


def make_adapter(folder: Path, seed: int = 0, hidden: int = 32, bottleneck: int = 8, groups: int = 2,
                 extra: dict | None = None) -> Path:
    """An adapter folder in the core's format: config, weights, head, metrics, vocab, a log."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weights = {}
    for g in range(groups):
        weights[f"g{g}.down.weight"] = rng.standard_normal((bottleneck, hidden)).astype(np.float32)
        weights[f"g{g}.down.bias"] = np.zeros(bottleneck, np.float32)
        weights[f"g{g}.up.weight"] = rng.standard_normal((hidden, bottleneck)).astype(np.float32)
        weights[f"g{g}.up.bias"] = np.zeros(hidden, np.float32)
    save_file(weights, str(folder / "adapterkit_weights.safetensors"), metadata={"format": "adapterkit.adapter"})
    save_file({"classifier.weight": rng.standard_normal((2, hidden)).astype(np.float32),
               "classifier.bias": np.zeros(2, np.float32)}, str(folder / "adapterkit_head.safetensors"))
    config = {
        "format": "adapterkit.adapter", "format_version": 1, "adapterkit_version": "0.1.0", "name": "sst2",
        "kind": "bottleneck", "config": {"sharing": 3, "bottleneck_dim": bottleneck, "seed": seed},
        "base_model": {"name_or_path": "tiny-bert", "model_type": "bert", "config_hash": "0123456789abcdef",
                       "hidden_size": hidden, "num_layers": [2 * groups]},
        "sites": [{"path": f"layer.{i}", "group": f"g{i // 2}"} for i in range(2 * groups)],
        "groups": {f"g{g}": [f"layer.{2 * g}", f"layer.{2 * g + 1}"] for g in range(groups)},
        **(extra or {}),
    }
    (folder / "adapterkit_config.json").write_text(json.dumps(config, indent=2))
    (folder / "metrics.json").write_text(json.dumps({"task": "sst2", "best": {"accuracy": 0.9125, "epoch": 2}}))
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\nworld\n")
    (folder / "train.log").write_text("step 1 loss 0.7\n")
    return folder


def expected_parameters(hidden: int = 32, bottleneck: int = 8, groups: int = 2) -> int:
    return groups * (2 * hidden * bottleneck + hidden + bottleneck)


def expected_version(folder: Path) -> str:
    """Independent of the library: sha256 over `sha256sum`-style lines of the stored files."""
    names = sorted(p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".json", ".txt", ".log"))
    lines = "".join(f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}\n" for n in names)
    return hashlib.sha256(lines.encode()).hexdigest()


def snapshot(root: Path, skip_tmp: bool = True) -> dict[str, str]:
    """Every file under a hub root with its sha256 (staging under tmp/ left out when asked)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not (skip_tmp and rel.startswith("tmp/")):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict:
    """The server package lives in hub/ (installed as adapterkit_hub); make it importable as-is."""
    paths = [str(REPO_ROOT), str(REPO_ROOT / "hub"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


class HubServer:
    """`python -m adapterkit_hub` on 127.0.0.1 at a free port, until `stop()`."""

    def __init__(self, root: Path, token_file: Path | None, limit_bytes: int = LIMIT_BYTES):
        self.root = root
        for _ in range(3):  # a free port can be taken between probing and binding: retry
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            cmd = [sys.executable, "-m", "adapterkit_hub", "--root", str(root), "--port", str(self.port),
                   "--max-upload-mb", str(limit_bytes / (1 << 20))]
            cmd += ["--token-file", str(token_file)] if token_file else []
            self.proc = subprocess.Popen(cmd, env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if self._wait_ready():
                return
        raise RuntimeError(f"hub server did not start: {self.proc.stdout.read().decode()[-2000:]}")

    def _wait_ready(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.url}/api/v1/info", timeout=1.0, trust_env=False).status_code == 200:
                    return True
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Hub:
    """One hub under test: `spec` is what users pass as --hub, `root` where its files lie."""

    kind: str
    spec: object
    root: Path
    token: str | None = None
    url: str | None = None

    def store(self, token: str | None = None):
        return FolderStore(self.root, max_file_bytes=LIMIT_BYTES) if self.kind == "folder" \
            else HttpStore(self.url, token)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("hubserver")
    (base / "tokens").write_text(f"# team tokens\n{TOKEN}\n")
    srv = HubServer(base / "root", base / "tokens")
    yield srv
    srv.stop()


@pytest.fixture(params=["folder", "server"])
def hub(request, tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ADAPTERKIT_HUB", raising=False)
    monkeypatch.delenv("ADAPTERKIT_HUB_TOKEN", raising=False)
    if request.param == "folder":
        root = tmp_path / "hub"
        return Hub("folder", FolderStore(root, max_file_bytes=LIMIT_BYTES), root)
    srv = request.getfixturevalue("server")
    return Hub("server", srv.url, srv.root, TOKEN, srv.url)
