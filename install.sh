#!/usr/bin/env bash
# Installs adapterkit for development into the current Python.
# torch is installed first and pinned to the CPU build so nothing resolves to a
# multi-GB CUDA build; the package itself is then built against that torch
# (no build isolation) so the C++ kernel compiles with the installed headers.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install -q "torch==${ADAPTERKIT_TORCH_VERSION:-2.13.0}"
# setuptools_scm with its dependencies: seqeval ships only an sdist whose setup_requires would
# otherwise fetch the newest setuptools_scm as a bare egg, without the packages it needs
python3 -m pip install -q setuptools wheel setuptools_scm
python3 -m pip install -q --no-build-isolation -e ".[dev]"
