"""The `adapterkit` command: one typer sub-app per command group, joined here.

Each group lives in its own module and keeps heavy imports (torch,
transformers) inside its command functions, so `adapterkit --help` is quick.
User errors (`AdapterkitError`, bad files) print one line and exit 1.
"""
from __future__ import annotations

import importlib
import os
import sys

import typer

app = typer.Typer(
    name="adapterkit",
    help="Bottleneck adapters with cross-layer sharing on Hugging Face transformers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)



@app.callback()
def _root() -> None:
    """adapterkit: train, plan, share and serve bottleneck adapters."""


# Modules that add their commands to `app` through a `register(app)` function.
_COMMAND_MODULES = ["plan", "train", "hub", "info", "transfer", "distill", "multitask", "interop"]


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"adapterkit.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"adapterkit.cli.{name}":
                continue  # that command group is not part of this build
            raise
        module.register(app)


def main() -> None:
    from adapterkit.errors import AdapterkitError

    # Library chatter (load reports, per-map progress bars) drowns the command's own output.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

    _register_all()
    try:
        app()
    except AdapterkitError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        sys.exit(1)
    except FileNotFoundError as e:
        typer.secho(f"error: file not found: {e.filename or e}", fg="red", err=True)
        sys.exit(1)
