"""Compiler settings of the RSA kernels, and their first-use build where none was prebuilt.

setup.py builds `adapterkit._C` (and `_C_cuda`) ahead of time when torch is
importable at install time (`install.sh`, `pip install --no-build-isolation`,
`python -m build --no-isolation`). An ordinary `pip install` builds in an
isolated environment without torch, so nothing is compiled there; the first
call that needs the kernel then compiles the packaged sources (adapterkit/csrc)
with `torch.utils.cpp_extension.load` into a cache folder and loads it:

    $ADAPTERKIT_KERNEL_CACHE or ~/.cache/adapterkit/kernels  (XDG_CACHE_HOME is honoured)
        <kind>-torch<version>-py<major><minor>-<arch>-<hash>/

keyed by torch version, Python version, CPU architecture (machine and -march;
for "native", a hash of the CPU's feature flags) and a hash of the sources and
compiler flags, so a new torch, a source change or another machine builds
anew. A file lock (`.lock` next to the folder) lets one process compile while
others wait and then load its result. One line on stderr says that it compiles
and where. ADAPTERKIT_SKIP_BUILD=1 (set when running) compiles nothing.

This module imports no torch at the top: setup.py loads it by path for the flags.
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
import time
from pathlib import Path

CSRC = Path(__file__).resolve().parents[1] / "csrc"
CPU_SOURCES = ("rsa_ops.cpp", "rsa_cpu_forward.cpp", "rsa_cpu_backward.cpp", "rsa_cpu_bf16.cpp")
CUDA_SOURCES = ("rsa_cuda.cu",)
SKIP_ENV = "ADAPTERKIT_SKIP_BUILD"
ARCH_ENV = "ADAPTERKIT_CPU_ARCH"
CACHE_ENV = "ADAPTERKIT_KERNEL_CACHE"


class BuildError(RuntimeError):
    """The first-use build failed; the message says why in one line and where the log is."""


def env_flag(name: str, default: str = "0") -> str:
    return os.environ.get(name, default).strip()


def skip_build() -> bool:
    return env_flag(SKIP_ENV) not in ("", "0")


def cpu_arch() -> str:
    """The -march value: ADAPTERKIT_CPU_ARCH, default "native" (tuned for this machine)."""
    return env_flag(ARCH_ENV, "native") or "native"


def cpu_flags(parallel_info: str, platform_name: str = sys.platform) -> tuple[list[str], list[str]]:
    """(compile, link) flags of the CPU kernel; `parallel_info` is torch.__config__.parallel_info()."""
    cxx = ["-O3", "-Wno-unknown-pragmas", f"-march={cpu_arch()}"]
    link: list[str] = []
    if platform_name.startswith("linux") and "OpenMP" in parallel_info:
        cxx.append("-fopenmp")  # at::parallel_for is inlined: without it the kernel runs serially
        link.append("-fopenmp")
    return cxx, link


CUDA_FLAGS = {"cxx": ["-O3"], "nvcc": ["-O3", "--use_fast_math"]}


def _machine_tag() -> str:
    """Machine and -march; for "native", a short hash of the CPU feature flags."""
    arch = cpu_arch()
    if arch == "native":
        flags = ""
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith(("flags", "Features")):
                    flags = line
                    break
        except OSError:
            flags = platform.processor()
        arch = "native" + hashlib.sha256(flags.encode()).hexdigest()[:8]
    return f"{platform.machine()}-{arch}"


def cache_root() -> Path:
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "adapterkit" / "kernels"


def build_dir(kind: str, torch_version: str, flags: list[str]) -> Path:
    """The cache folder of one build: kind, torch, Python, machine, hash of sources and flags."""
    digest = hashlib.sha256(" ".join(flags).encode())
    for path in sorted(CSRC.iterdir()):
        if path.suffix in (".cpp", ".cu", ".h"):
            digest.update(path.name.encode() + path.read_bytes())
    py = f"py{sys.version_info[0]}{sys.version_info[1]}"
    name = f"{kind}-torch{torch_version.replace('+', '_')}-{py}-{_machine_tag()}-{digest.hexdigest()[:12]}"
    return cache_root() / name


class _FileLock:
    """An exclusive lock on a file (fcntl), held while a build is checked or made."""

    def __init__(self, path: Path):
        self.path, self.file = path, None

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a")
        fcntl.flock(self.file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def _library(folder: Path, name: str) -> Path | None:
    found = sorted(folder.glob(f"{name}*.so")) + sorted(folder.glob(f"{name}*.pyd"))
    return found[0] if found else None


def _ninja_on_path() -> None:
    """cpp_extension.load runs `ninja` from PATH; a venv used without activating it has the `ninja`
    package (a dependency) but not its bin folder on PATH, so add the package's own."""
    import shutil

    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def build_and_load(kind: str) -> dict:
    """Load the `kind` ("cpu" or "cuda") kernel from the cache, compiling it first if needed.

    Returns {"path": library, "compiled_s": seconds or None (cache hit)}; raises
    BuildError with a one-line reason when compiling is impossible or fails.
    """
    import torch

    if kind == "cpu":
        cxx, link = cpu_flags(torch.__config__.parallel_info())
        sources, flags = CPU_SOURCES, cxx + link
    else:
        cxx, link = CUDA_FLAGS["cxx"], []
        sources, flags = CUDA_SOURCES, CUDA_FLAGS["cxx"] + CUDA_FLAGS["nvcc"]
    name = f"adapterkit_rsa_{kind}"
    folder = build_dir(kind, torch.__version__, flags)
    with _FileLock(folder.with_name(folder.name + ".lock")):
        library = _library(folder, name)
        if library is not None:
            torch.ops.load_library(str(library))
            return {"path": str(library), "compiled_s": None}
        from torch.utils import cpp_extension  # a slow import: only where there is something to compile

        folder.mkdir(parents=True, exist_ok=True)
        print(f"adapterkit: compiling the RSA attention kernel for {kind} (first use, once per torch version and machine; a few minutes) "
              f"into {folder}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        _ninja_on_path()
        try:
            cpp_extension.load(name=name, sources=[str(CSRC / s) for s in sources], extra_cflags=cxx,
                               extra_cuda_cflags=CUDA_FLAGS["nvcc"] if kind == "cuda" else None,
                               extra_ldflags=link, build_directory=str(folder), is_python_module=False,
                               verbose=False)
        except Exception as e:  # no compiler or ninja, a compile error, a load error
            log = folder / "build-error.log"
            log.write_text(str(e))
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BuildError(f"first-use build failed ({first[:200]}); full output in {log}") from e
        library = _library(folder, name)
        return {"path": str(library) if library else str(folder), "compiled_s": time.perf_counter() - start}
