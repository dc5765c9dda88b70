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


def _run(code: str, timeout: float = 600, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=timeout)


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


@pytest.mark.parametrize("device,cuda_home,tried", [
    (False, "/usr/local/cuda", False),  # no CUDA device for torch: an installed nvcc is no reason
    (True, None, False),                # a device but no toolkit: said so, not tried
    (True, "/usr/local/cuda", True),
])
def test_first_use_cuda_build_gate(device, cuda_home, tried, monkeypatch):
    from torch.utils import cpp_extension

    from adapterkit.ops import extension

    monkeypatch.setattr(cpp_extension, "CUDA_HOME", cuda_home)
    monkeypatch.setattr(extension, "_state", extension._Kernels())
    torch = SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: device))
    assert extension._cuda_buildable(torch) == tried
    assert ("no CUDA toolkit" in extension._state.reasons.get("cuda", "")) == (device and not tried)


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
q = torch.randn(1, 2, 600, 8)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    a = rsa_attention(q, q, q, block_size=16, density=0.25, global_blocks=1)
    b = rsa_attention(q, q, q, block_size=16, density=0.25, global_blocks=1)
messages = [str(w.message) for w in caught if "block-sparse SDPA fallback" in str(w.message)]
want = rsa_attention_reference(q, q, q, block_size=16, density=0.25, global_blocks=1)
print(len(messages), torch.allclose(a, want, atol=1e-5), kernel_status()["cpu"])
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
        assert report["kernels"]["rsa_cpu"]["source"] == "prebuilt (adapterkit._C)"
    off = _info(ADAPTERKIT_NO_KERNELS="1")
    assert off["kernels"]["rsa_cpu"] == {"available": False, "detail": "disabled by ADAPTERKIT_NO_KERNELS=1",
                                         "source": None}
    assert off["rsa_fallback"].startswith("block-sparse SDPA fallback")
    assert {"torch", "transformers", "adapterkit"} <= set(report)


# ---------------------------------------------------------------- first-use build

PREBUILT = sorted((ROOT / "adapterkit").glob("_C*.so"))

# Runs in a fresh process with the prebuilt module hidden, so the first-use build path is taken.
# With FAKE_COMPILE set, torch's compiler driver is replaced by a copy of the prebuilt library
# (after a pause), so the cache, the lock and the message are tested without minutes of compiling.
FIRST_USE = """
import json, os, shutil, sys, time
sys.modules["adapterkit._C"] = None
import torch
from torch.utils import cpp_extension
calls = []
if os.environ.get("FAKE_COMPILE"):
    def fake_load(name, sources, build_directory, **kwargs):
        calls.append(name)
        time.sleep(float(os.environ["FAKE_COMPILE"]))
        shutil.copy(os.environ["PREBUILT"], os.path.join(build_directory, name + ".so"))
        torch.ops.load_library(os.path.join(build_directory, name + ".so"))
    cpp_extension.load = fake_load
from adapterkit.ops import kernel_status, rsa_attention, rsa_attention_reference
q = torch.randn(2, 2, 100, 16)
kw = dict(block_size=16, density=0.5, global_blocks=1)
err = (rsa_attention(q, q, q, **kw) - rsa_attention_reference(q, q, q, **kw)).abs().max().item()
print(json.dumps({"status": kernel_status(), "calls": calls, "err": err}))
"""


def _first_use(cache: Path, timeout: float = 600, **env) -> tuple[dict, str]:
    done = _run(FIRST_USE, timeout, ADAPTERKIT_KERNEL_CACHE=str(cache),
                PREBUILT=str(PREBUILT[0]) if PREBUILT else "", **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


@pytest.mark.skipif(not PREBUILT, reason="needs the prebuilt adapterkit/_C*.so to stand in for a compile")
def test_first_use_build_is_cached_and_announced(tmp_path, monkeypatch):
    monkeypatch.delenv("ADAPTERKIT_SKIP_BUILD", raising=False)
    first, stderr = _first_use(tmp_path, FAKE_COMPILE="0")
    assert first["calls"] == ["adapterkit_rsa_cpu"] and first["err"] < 1e-5
    assert first["status"]["cpu"] and first["status"]["sources"]["cpu"].startswith("first-use build, compiled")
    lines = [line for line in stderr.splitlines() if "compiling" in line]
    assert len(lines) == 1 and str(tmp_path) in lines[0]
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert folder.name.startswith("cpu-torch") and "-py3" in folder.name
    second, stderr = _first_use(tmp_path, FAKE_COMPILE="0")
    assert second["calls"] == [] and "compiling" not in stderr
    assert "cache hit" in second["status"]["sources"]["cpu"] and second["err"] < 1e-5


@pytest.mark.skipif(not PREBUILT, reason="needs the prebuilt adapterkit/_C*.so to stand in for a compile")
def test_first_use_build_lock_lets_one_process_compile(tmp_path, monkeypatch):
    monkeypatch.delenv("ADAPTERKIT_SKIP_BUILD", raising=False)
    env = {**os.environ, "ADAPTERKIT_KERNEL_CACHE": str(tmp_path), "PREBUILT": str(PREBUILT[0]),
           "FAKE_COMPILE": "3"}
    procs = [subprocess.Popen([sys.executable, "-c", FIRST_USE], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [json.loads(p.communicate(timeout=600)[0].splitlines()[-1]) for p in procs]
    assert sorted(len(r["calls"]) for r in results) == [0, 1]
    assert all(r["status"]["cpu"] and r["err"] < 1e-5 for r in results)


def test_skip_build_at_run_time_uses_the_fallback(tmp_path):
    report, _ = _first_use(tmp_path, ADAPTERKIT_SKIP_BUILD="1")
    assert not report["status"]["cpu"] and "ADAPTERKIT_SKIP_BUILD=1" in report["status"]["reasons"]["cpu"]
    assert report["err"] < 1e-5 and not any(tmp_path.iterdir())


def test_cache_folder_changes_with_torch_arch_and_sources(monkeypatch):
    from adapterkit.ops import build

    base = build.build_dir("cpu", "2.13.0", ["-O3"])
    assert build.build_dir("cpu", "2.14.0", ["-O3"]) != base
    assert build.build_dir("cpu", "2.13.0", ["-O2"]) != base
    monkeypatch.setenv("ADAPTERKIT_CPU_ARCH", "x86-64-v3")
    assert "x86-64-v3" in build.build_dir("cpu", "2.13.0", ["-O3"]).name


@pytest.mark.slow
def test_first_use_build_really_compiles(tmp_path, monkeypatch):
    """The real compile (minutes): the packaged sources into an empty cache, then a cache hit."""
    monkeypatch.delenv("ADAPTERKIT_SKIP_BUILD", raising=False)
    first, stderr = _first_use(tmp_path, timeout=3000)
    assert first["status"]["sources"]["cpu"].startswith("first-use build, compiled"), stderr
    assert first["err"] < 1e-5
    second, stderr = _first_use(tmp_path)
    assert "cache hit" in second["status"]["sources"]["cpu"] and "compiling" not in stderr


def _torch_requirement() -> str:
    """The torch already used here, by version: pip resolves it to the same (CPU) build where the
    machine's wheels or index carry it, and a fresh venv gets torch before adapterkit."""
    import torch

    return f"torch=={torch.__version__.split('+')[0]}"


@pytest.mark.slow
def test_fresh_venv_pip_install_gets_the_kernel_on_first_use(tmp_path):
    """The ordinary install: a new venv, torch first, then `pip install -e .` with build isolation on
    (setup.py cannot see torch there, so nothing is prebuilt); the first call compiles the kernel
    once, the next process loads it from the cache, and `adapterkit info` says so. The venv sees
    this Python's packages (--system-site-packages: torch and the dependencies are already there,
    so nothing large is downloaded or unpacked; a venv without them took over 20 minutes of installs
    on a busy 2-core machine); the isolated build environment sees none of them. About 5-10 minutes
    (one real compile)."""
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:   # the sources as committed or edited, without any built .so
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ADAPTERKIT_SKIP_BUILD")}
    pip = [python, "-m", "pip", "install", "-q"]
    subprocess.run(pip + [_torch_requirement()], check=True, timeout=1200, env=env)
    subprocess.run(pip + ["-e", str(src)], check=True, timeout=1200, cwd=tmp_path, env=env)   # isolation on
    assert not list((src / "adapterkit").glob("_C*.so"))    # the isolated build compiled nothing
    env["ADAPTERKIT_KERNEL_CACHE"] = str(tmp_path / "k")   # the venv is not activated: PATH unchanged
    code = FIRST_USE.replace('sys.modules["adapterkit._C"] = None\n', "")

    def run(*argv):
        done = subprocess.run([python, *argv], capture_output=True, text=True, cwd=tmp_path, timeout=3000,
                              env=env)
        assert done.returncode == 0, done.stderr
        return done

    first = run("-c", code)
    report = json.loads(first.stdout.splitlines()[-1])
    assert report["status"]["sources"]["cpu"].startswith("first-use build, compiled"), first.stderr
    assert report["err"] < 1e-5 and "compiling the RSA attention kernel" in first.stderr
    print(report["status"]["sources"]["cpu"])             # shown with -s: the compile time
    second = run("-c", code)
    report = json.loads(second.stdout.splitlines()[-1])
    assert "cache hit" in report["status"]["sources"]["cpu"] and "compiling" not in second.stderr
    assert report["err"] < 1e-5
    info = json.loads(run("-m", "adapterkit.cli", "info", "--json").stdout)
    assert info["kernels"]["rsa_cpu"]["available"] and "cache hit" in info["kernels"]["rsa_cpu"]["source"]
