"""Kernel build gates, the announced fallback, lean imports and `adapterkit info`."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _setup_module():
    spec = importlib.util.spec_from_file_location("adapterkit_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)   # defines functions only: setup() runs under __main__
    return module


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=120)


def test_skip_build_env_compiles_nothing(monkeypatch):
    monkeypatch.setenv("ADAPTERKIT_SKIP_BUILD", "1")
    assert _setup_module().extensions() == ([], {})


@pytest.mark.parametrize("torch_cuda,cuda_home,built", [
    (None, "/usr/local/cuda", False),   # CPU torch: an installed toolkit (nvcc) is not enough
    ("12.4", None, False),              # CUDA torch without a toolkit
    ("12.4", "/usr/local/cuda", True),
])
def test_cuda_kernel_gate(torch_cuda, cuda_home, built, monkeypatch):
    monkeypatch.delenv("ADAPTERKIT_BUILD_CUDA", raising=False)
    setup = _setup_module()
    torch = SimpleNamespace(version=SimpleNamespace(cuda=torch_cuda))
    cpp = SimpleNamespace(CUDA_HOME=cuda_home, CUDAExtension=lambda name, sources, **kw: (name, sources))
    ext = setup._cuda_extension(torch, cpp)
    assert (ext == ("adapterkit._C_cuda", ["adapterkit/csrc/rsa_cuda.cu"])) if built else ext is None


def test_real_torch_here_gets_only_the_cpu_kernel(monkeypatch):
    monkeypatch.delenv("ADAPTERKIT_SKIP_BUILD", raising=False)
    import torch

    modules, cmdclass = _setup_module().extensions()
    names = [m.name for m in modules]
    assert names[0] == "adapterkit._C" and "build_ext" in cmdclass
    assert ("adapterkit._C_cuda" in names) == (torch.version.cuda is not None)
    assert any(a.startswith("-march=") for a in modules[0].extra_compile_args["cxx"])


def test_import_is_lean():
    done = _run("import sys, adapterkit.ops; print('torch' in sys.modules, 'transformers' in sys.modules)")
    assert done.stdout.split() == ["False", "False"], done.stderr


def test_fallback_is_announced_once_and_correct():
    code = """
import warnings, torch
from adapterkit.ops import rsa_attention, rsa_attention_reference, kernel_status
q = torch.randn(1, 2, 40, 8)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    a = rsa_attention(q, q, q, block_size=16, density=0.5)
    b = rsa_attention(q, q, q, block_size=16, density=0.5)
messages = [str(w.message) for w in caught if "reference" in str(w.message)]
print(len(messages), torch.equal(a, rsa_attention_reference(q, q, q, block_size=16, density=0.5)),
      kernel_status()["cpu"])
"""
    done = _run(code, ADAPTERKIT_NO_KERNELS="1")
    assert done.stdout.split() == ["1", "True", "False"], done.stderr


def _info(**env) -> dict:
    done = _run("from adapterkit.cli import main; import sys; sys.argv = ['adapterkit', 'info', '--json']; main()",
                **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_info_reports_kernels():
    from adapterkit.ops import extension

    report = _info()
    assert report["kernels"]["rsa_cpu"]["available"] == extension.available("cpu")
    if extension.available("cpu"):
        assert report["kernels"]["rsa_cpu"]["detail"].startswith("cpu[")
    off = _info(ADAPTERKIT_NO_KERNELS="1")
    assert off["kernels"]["rsa_cpu"] == {"available": False, "detail": "disabled by ADAPTERKIT_NO_KERNELS=1"}
    assert {"torch", "transformers", "adapterkit"} <= set(report)
