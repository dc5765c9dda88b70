"""`adapterkit export --to adapterhub` and `adapterkit import --from adapterhub`: convert adapter
folders between adapterkit and AdapterHub's `adapters` format (thin wrappers over
adapterkit.interop; no `adapters` install needed)."""
from __future__ import annotations

from typing import Optional

import typer

from adapterkit.errors import AdapterkitError
from adapterkit.io.files import check_output

FORMATS = ("adapterhub",)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("import")(import_)


def export(
    src: str = typer.Argument(..., metavar="SRC", help="Saved adapterkit adapter folder (holds adapterkit_config.json)."),
    dest: str = typer.Argument(..., metavar="DEST", help="Folder to write."),
    to: str = typer.Option(..., "--to", help="Target format: adapterhub."),
    name: Optional[str] = typer.Option(None, "--name", help="Adapter name in the export. Default: the saved name."),
    weights: str = typer.Option(
        "both", "--weights",
        help="adapterhub: both (default), safetensors (load with use_safetensors=True) or bin (pytorch_adapter.bin).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into an existing non-empty DEST (refused by default)."),
) -> None:
    """Write an adapterkit adapter in another library's format (shared modules copied per site)."""
    from adapterkit.interop import convert_to_adapterhub

    _check_format(to, "--to")
    check_output(dest, overwrite, inputs=[src], folder=True, flag="DEST")
    typer.echo(convert_to_adapterhub(src, dest, name=name, weights=weights))


def import_(
    src: str = typer.Argument(..., metavar="SRC", help="Adapter folder in the other format (AdapterHub: holds adapter_config.json)."),
    dest: str = typer.Argument(..., metavar="DEST", help="adapterkit adapter folder to write."),
    from_: str = typer.Option(..., "--from", help="Source format: adapterhub."),
    model: Optional[str] = typer.Option(
        None, "--model", help="Backbone (folder, hub name or config.json). Default: the model_name the adapter records."
    ),
    name: Optional[str] = typer.Option(None, "--name", help="Adapter name. Default: the name in the source."),
    head: bool = typer.Option(True, "--head/--no-head", help="Also convert the prediction head, if the source has one."),
    allow_bin: bool = typer.Option(
        False, "--allow-bin", help="Read pytorch_adapter.bin (torch.load, weights_only) when there is no safetensors file."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into an existing non-empty DEST (refused by default)."),
) -> None:
    """Read another library's adapter into an adapterkit folder (each site its own module)."""
    from adapterkit.interop import convert_from_adapterhub

    _check_format(from_, "--from")
    check_output(dest, overwrite, inputs=[src], folder=True, flag="DEST")
    typer.echo(convert_from_adapterhub(src, dest, model=model, name=name, with_head=head, allow_bin=allow_bin))


def _check_format(value: str, flag: str) -> None:
    if value.lower() not in FORMATS:
        raise AdapterkitError(f"{flag} {value!r}: supported formats are {', '.join(FORMATS)}")
