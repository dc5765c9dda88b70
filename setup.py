"""Build hook for the compiled kernels (see adapterkit/csrc). Metadata lives in pyproject.toml."""
from setuptools import setup

setup()
