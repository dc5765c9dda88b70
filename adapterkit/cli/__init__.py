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
def _root(
    verbose: bool = typer.Option(False, "--verbose", help="Show the libraries' own output too (transformers' load reports and bars)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars or progress lines."),
) -> None:
    """adapterkit: train, plan, share and serve bottleneck adapters."""
    if verbose:
        os.environ["ADAPTERKIT_VERBOSE"] = "1"  # read by adapterkit.backbone, inherited by workers
        os.environ["TRANSFORMERS_VERBOSITY"] = "warning"
        os.environ.pop("HF_DATASETS_DISABLE_PROGRESS_BARS", None)
    if quiet:
        from adapterkit.progress import set_enabled

        set_enabled(False)


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
