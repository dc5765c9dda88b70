"""`adapterkit push`, `adapterkit pull` and the `adapterkit hub` group (serve, list, show, tag,
delete-tag): thin wrappers over adapterkit.hub."""
from __future__ import annotations

import json
from typing import List, Optional

import typer

HUB_HELP = ("Hub: a folder path or http(s)://host:port. "
            "Default: $ADAPTERKIT_HUB, else ~/.cache/adapterkit/hub (or $ADAPTERKIT_CACHE/hub).")
TOKEN_HELP = "Bearer token for writes to a hub server. Default: $ADAPTERKIT_HUB_TOKEN."
HubOpt = typer.Option(None, "--hub", help=HUB_HELP)
TokenOpt = typer.Option(None, "--token", help=TOKEN_HELP)
JsonOpt = typer.Option(False, "--json", help="Print JSON instead of text.")

hub_app = typer.Typer(help="Browse, tag and serve an adapter hub.", no_args_is_help=True)


def push(
    folder: str = typer.Argument(..., metavar="FOLDER", help="Adapter folder (holds adapterkit_config.json)."),
    ref: str = typer.Argument(..., metavar="REF", help="NAMESPACE/NAME[:TAG]; `latest` always moves to the new version."),
    tag: List[str] = typer.Option([], "--tag", "-t", metavar="TAG", help="Extra tag to move to this version (repeatable: -t best -t v2)."),
    hub: Optional[str] = HubOpt,
    token: Optional[str] = TokenOpt,
    include_checkpoint: bool = typer.Option(False, "--include-checkpoint", help="Also publish checkpoint/ (the training state for --resume); left out by default."),
) -> None:
    """Publish an adapter folder as a new version; prints the version id (sha256 of the content).

    Sent: the adapter and head weights, configs, metrics, tokenizer files and train.log."""
    from adapterkit.hub import push_adapter

    typer.echo(push_adapter(folder, ref, hub=hub, token=token, tags=tag, include_checkpoint=include_checkpoint))


def pull(
    ref: str = typer.Argument(..., metavar="REF", help="NAMESPACE/NAME[:TAG|@VERSION]; default tag `latest`."),
    dest: Optional[str] = typer.Argument(None, metavar="DEST", help="Folder to create. Default: the per-user cache."),
    hub: Optional[str] = HubOpt,
) -> None:
    """Fetch a version, verifying every file's sha256 against its card; prints the folder."""
    from adapterkit.hub import pull_adapter

    typer.echo(str(pull_adapter(ref, dest, hub=hub)))


@hub_app.command("serve")
def serve(
    root: str = typer.Option(..., "--root", help="Hub folder to serve (created if missing)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8765, "--port", help="Port to listen on."),
    token_file: Optional[str] = typer.Option(
        None, "--token-file", help="File of bearer tokens, one a line. Without it the hub is read-only."),
    max_upload_mb: float = typer.Option(512.0, "--max-upload-mb", help="Largest file accepted, in MiB."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve a hub folder over HTTP for a team (reads open, writes need the token)."""
    from adapterkit.errors import AdapterkitError

    try:
        from adapterkit_hub import serve as run
    except ModuleNotFoundError as e:
        raise AdapterkitError(f"the hub server is not installed ({e}); reinstall adapterkit with pip") from None
    run(root, host, port, token_file, max_upload_mb, log_level)


@hub_app.command("list")
def list_(
    pattern: Optional[str] = typer.Argument(None, metavar="PATTERN", help="Glob on NAMESPACE/NAME, e.g. 'team/*'."),
    hub: Optional[str] = HubOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List repositories with their tags."""
    from adapterkit.hub import list_repos

    repos = list_repos(pattern, hub=hub)
    if as_json:
        typer.echo(json.dumps(repos, indent=2))
        return
    for r in repos:
        tags = ", ".join(f"{t}={v[:12]}" for t, v in r["tags"].items())
        typer.echo(f"{r['repo']}  ({r['num_versions']} version{'s' if r['num_versions'] != 1 else ''})  {tags}")


@hub_app.command("show")
def show(
    ref: str = typer.Argument(..., metavar="REF", help="NAMESPACE/NAME[:TAG|@VERSION]; default tag `latest`."),
    hub: Optional[str] = HubOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Print the card of a version: task, base model, sharing, metrics, parameters, files."""
    from adapterkit.hub import show as card_of
    from adapterkit.hub.card import summary_lines

    card = card_of(ref, hub=hub)
    typer.echo(json.dumps(card, indent=2) if as_json else "\n".join(summary_lines(card)))


@hub_app.command("tag")
def tag(
    ref: str = typer.Argument(..., metavar="REF", help="NAMESPACE/NAME@VERSION (or :TAG) to point the tag at."),
    new_tag: str = typer.Argument(..., metavar="TAG", help="Tag to create or move."),
    hub: Optional[str] = HubOpt,
    token: Optional[str] = TokenOpt,
) -> None:
    """Create or move a tag (atomically); prints the version it now names."""
    from adapterkit.hub import tag as set_tag

    typer.echo(set_tag(ref, new_tag, hub=hub, token=token))


@hub_app.command("delete-tag")
def delete_tag(
    ref: str = typer.Argument(..., metavar="REF", help="NAMESPACE/NAME:TAG to remove (`latest` cannot be removed)."),
    hub: Optional[str] = HubOpt,
    token: Optional[str] = TokenOpt,
) -> None:
    """Remove a tag; the version it named stays."""
    from adapterkit.hub import delete_tag as remove

    remove(ref, hub=hub, token=token)
    typer.echo(f"deleted {ref}")


def register(app: typer.Typer) -> None:
    app.command("push")(push)
    app.command("pull")(pull)
    app.add_typer(hub_app, name="hub")
