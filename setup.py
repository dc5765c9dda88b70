"""Build hook for the compiled kernels in adapterkit/csrc. Metadata lives in pyproject.toml.

Ahead of time: the CPU kernel is compiled with the machine's C++ compiler against
the torch that is already installed, where torch is importable here: `install.sh`,
`pip install --no-build-isolation -e .`, `python -m build --wheel --no-isolation`
(the wheel then carries adapterkit/_C*.so). An ordinary `pip install` builds in an
isolated environment without torch: nothing is compiled then, and adapterkit
compiles the packaged sources on first use instead (adapterkit/ops/build.py). The
CUDA kernel is compiled only where that torch was built with CUDA *and* torch
finds a CUDA toolkit (CUDA_HOME); an `nvcc` on the PATH alone is not enough.

Environment variables:
  ADAPTERKIT_SKIP_BUILD=1   compile nothing (here, and no first-use build when set at
                            run time); adapterkit then runs its block-sparse SDPA
                            fallback and says so once (see `adapterkit info`).
  ADAPTERKIT_CPU_ARCH=ARCH  value for -march (default "native": the kernel is tuned
                            for the build machine and may not run on an older CPU;
                            a wheel for other machines: ADAPTERKIT_CPU_ARCH=x86-64-v3
                            python -m build --wheel --no-isolation, for any x86-64 CPU
                            with AVX2, or x86-64 for any at all).
  ADAPTERKIT_BUILD_CUDA=0   never compile the CUDA kernel.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from setuptools import setup

CSRC = "adapterkit/csrc"


def _build_settings():
    """adapterkit/ops/build.py, loaded by path (no torch, no package import): the shared flags."""
    path = Path(__file__).resolve().parent / "adapterkit" / "ops" / "build.py"
    spec = importlib.util.spec_from_file_location("adapterkit_build_settings", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = _build_settings()


def _say(message: str) -> None:
    print(f"adapterkit setup: {message}", file=sys.stderr)


def _cpu_extension(torch, cpp_extension):
    cxx, link = BUILD.cpu_flags(torch.__config__.parallel_info())
    return cpp_extension.CppExtension(
        "adapterkit._C",
        [f"{CSRC}/{s}" for s in BUILD.CPU_SOURCES],
        extra_compile_args={"cxx": cxx},
        extra_link_args=link,
    )


def _cuda_extension(torch, cpp_extension):
    if BUILD.env_flag("ADAPTERKIT_BUILD_CUDA", "1") == "0":
        return None
    if torch.version.cuda is None or cpp_extension.CUDA_HOME is None:
        _say("CUDA kernel not built (torch has no CUDA or no CUDA toolkit was found)")
        return None
    return cpp_extension.CUDAExtension(
        "adapterkit._C_cuda",
        [f"{CSRC}/{s}" for s in BUILD.CUDA_SOURCES],
        extra_compile_args=BUILD.CUDA_FLAGS,
    )


def extensions():
    """(ext_modules, cmdclass) for setup(); empty when building is skipped or impossible."""
    if BUILD.skip_build():
        _say("ADAPTERKIT_SKIP_BUILD is set: no kernels compiled")
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        _say("torch is not importable here (an isolated build), so no kernels are compiled now: "
             "adapterkit compiles them on first use; to build them here, install torch first and "
             "use `pip install --no-build-isolation`")
        return [], {}
    modules = [_cpu_extension(torch, cpp_extension), _cuda_extension(torch, cpp_extension)]
    build_ext = cpp_extension.BuildExtension.with_options(no_python_abi_suffix=False)
    return [m for m in modules if m is not None], {"build_ext": build_ext}


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import it
    ext_modules, cmdclass = extensions()
    setup(ext_modules=ext_modules, cmdclass=cmdclass)
