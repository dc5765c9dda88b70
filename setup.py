"""Build hook for the compiled kernels in adapterkit/csrc. Metadata lives in pyproject.toml.

The CPU kernel is compiled with the machine's C++ compiler against the torch that
is already installed (install with `pip install --no-build-isolation -e .`, so no
build environment ever downloads its own torch). The CUDA kernel is compiled only
where that torch was built with CUDA *and* torch finds a CUDA toolkit (CUDA_HOME);
an `nvcc` on the PATH alone is not enough.

Environment variables:
  ADAPTERKIT_SKIP_BUILD=1   compile nothing; adapterkit then runs its pure-PyTorch
                            reference attention and says so once (see `adapterkit info`).
  ADAPTERKIT_CPU_ARCH=ARCH  value for -march (default "native": the kernel is tuned
                            for the build machine; use e.g. "x86-64-v3" for a wheel
                            that must run on other machines).
  ADAPTERKIT_BUILD_CUDA=0   never compile the CUDA kernel.
"""
from __future__ import annotations

import os
import sys

from setuptools import setup

CSRC = "adapterkit/csrc"
CPU_SOURCES = ["rsa_ops.cpp", "rsa_cpu_forward.cpp", "rsa_cpu_backward.cpp", "rsa_cpu_bf16.cpp"]


def _flag(name: str, default: str) -> str:
    return os.environ.get(name, default).strip()


def _say(message: str) -> None:
    print(f"adapterkit setup: {message}", file=sys.stderr)


def _cpu_extension(torch, cpp_extension):
    cxx = ["-O3", "-Wno-unknown-pragmas", f"-march={_flag('ADAPTERKIT_CPU_ARCH', 'native')}"]
    link = []
    if sys.platform.startswith("linux") and "OpenMP" in torch.__config__.parallel_info():
        cxx.append("-fopenmp")  # at::parallel_for is inlined: without it the kernel runs serially
        link.append("-fopenmp")
    return cpp_extension.CppExtension(
        "adapterkit._C",
        [f"{CSRC}/{s}" for s in CPU_SOURCES],
        extra_compile_args={"cxx": cxx},
        extra_link_args=link,
    )


def _cuda_extension(torch, cpp_extension):
    if _flag("ADAPTERKIT_BUILD_CUDA", "1") == "0":
        return None
    if torch.version.cuda is None or cpp_extension.CUDA_HOME is None:
        _say("CUDA kernel not built (torch has no CUDA or no CUDA toolkit was found)")
        return None
    return cpp_extension.CUDAExtension(
        "adapterkit._C_cuda",
        [f"{CSRC}/rsa_cuda.cu"],
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "--use_fast_math"]},
    )


def extensions():
    """(ext_modules, cmdclass) for setup(); empty when building is skipped or impossible."""
    if _flag("ADAPTERKIT_SKIP_BUILD", "0") not in ("", "0"):
        _say("ADAPTERKIT_SKIP_BUILD is set: no kernels compiled")
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        _say("torch is not importable here, so no kernels are compiled; install torch first "
             "and build with `pip install --no-build-isolation`")
        return [], {}
    modules = [_cpu_extension(torch, cpp_extension), _cuda_extension(torch, cpp_extension)]
    build_ext = cpp_extension.BuildExtension.with_options(no_python_abi_suffix=False)
    return [m for m in modules if m is not None], {"build_ext": build_ext}


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import it
    ext_modules, cmdclass = extensions()
    setup(ext_modules=ext_modules, cmdclass=cmdclass)
