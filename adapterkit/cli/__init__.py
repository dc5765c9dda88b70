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
    rich_markup_mode=None,  # plain help: flags read as flags (rich shows `--quiet <bool>`), no boxes
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
    from adapterkit.progress import set_enabled

    set_enabled(not quiet)  # every invocation decides afresh (main() may run many times in one process)


# Modules that add their commands to `app` through a `register(app)` function.
_COMMAND_MODULES = ["plan", "train", "compose", "hub", "info", "transfer", "distill", "multitask", "interop", "serve"]


_registered: list[str] = []


def _register_all() -> None:
    """Add every command group to `app`, once (main() may run many times in one process). A
    missing module is an error, never a silently absent command."""
    for name in _COMMAND_MODULES:
        if name not in _registered:
            importlib.import_module(f"adapterkit.cli.{name}").register(app)
            _registered.append(name)


def main(argv: list[str] | None = None) -> None:
    """Run the command line; every expected failure is one line on stderr and exit status 1
    (set ADAPTERKIT_DEBUG=1 to see the traceback instead)."""
    # Library chatter (load reports, per-map progress bars) drowns the command's own output.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

    _register_all()
    from adapterkit.cli.suggest import unknown_option

    message = unknown_option(app, sys.argv[1:] if argv is None else argv)
    if message:
        typer.secho(f"error: {message}", fg="red", err=True)
        sys.exit(2)
    try:
        app(args=argv, prog_name="adapterkit")
    except KeyboardInterrupt:
        if "LOCAL_WORLD_SIZE" not in os.environ:  # a torchrun worker stays quiet: its launcher reports
            typer.secho("interrupted", fg="red", err=True)
        sys.exit(130)
    except Exception as e:
        message = user_error(e)
        if message is None or os.environ.get("ADAPTERKIT_DEBUG"):
            raise
        typer.secho(f"error: {message}", fg="red", err=True)
        sys.exit(1)


def user_error(e: BaseException) -> str | None:
    """The one-line message for an error a user or a file can cause; None for a bug."""
    import errno
    import json
    import re

    from adapterkit.errors import AdapterkitError

    if isinstance(e, AdapterkitError):
        return _one_line(str(e))
    if isinstance(e, OSError) and not isinstance(e, (ConnectionError, TimeoutError)):
        where = e.filename or ""
        what = {errno.ENOENT: "no such file or folder", errno.EACCES: "permission denied",
                errno.EPERM: "operation not permitted", errno.EISDIR: "is a folder, expected a file",
                errno.ENOTDIR: "a path component is a file, not a folder", errno.ENOSPC: "no space left on the device",
                errno.EROFS: "read-only file system", errno.ENOTEMPTY: "folder not empty"}.get(e.errno)
        return _one_line(f"{where}: {what or e.strerror or e}" if where else f"{what or e.strerror or e}")
    if isinstance(e, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({e.reason} at byte {e.start})"
    if isinstance(e, RecursionError):
        return "an input is nested too deeply"
    if isinstance(e, json.JSONDecodeError):
        return f"malformed JSON ({e.msg} at line {e.lineno})"
    if isinstance(e, re.error):
        return f"bad regular expression {e.pattern!r}: {e.msg}"
    if type(e).__name__ == "SafetensorError":
        return _one_line(f"unreadable safetensors file ({e})")
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())
