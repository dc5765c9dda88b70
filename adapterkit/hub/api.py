"""Push, pull and browse adapters on a hub: a folder (the embedded default) or a server URL.

    version = push_adapter("runs/sst2", "team/sst2:v1")                # -> sha256 version id
    path = pull_adapter("team/sst2:v1")                                 # -> verified local folder
    push_adapter("runs/sst2", "team/sst2", hub="http://127.0.0.1:8765", token="...")

Which hub: the `hub` argument (a folder path or an http(s) URL), else `$ADAPTERKIT_HUB`, else
a per-user folder (`$ADAPTERKIT_CACHE/hub`, default ~/.cache/adapterkit/hub). Tokens for
servers: the `token` argument, else `$ADAPTERKIT_HUB_TOKEN`.
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterable, Union

from adapterkit.hub.card import card_entries
from adapterkit.hub.errors import HubError, IntegrityError
from adapterkit.hub.files import (FileEntry, check_entries, hash_file, is_training_state, read_chunks, scan_folder,
                                  version_id)
from adapterkit.hub.http import HttpStore
from adapterkit.hub.refs import Ref, check_part, check_version, parse_ref
from adapterkit.hub.store import FolderStore

log = logging.getLogger("adapterkit.hub")
Store = Union[FolderStore, HttpStore]
HubLike = Union[str, os.PathLike, FolderStore, HttpStore, None]
HUB_ENV, TOKEN_ENV, CACHE_ENV = "ADAPTERKIT_HUB", "ADAPTERKIT_HUB_TOKEN", "ADAPTERKIT_CACHE"
_CLIENTS: dict[tuple, HttpStore] = {}


def cache_dir() -> Path:
    """Per-user cache: `$ADAPTERKIT_CACHE`, else `$XDG_CACHE_HOME/adapterkit`, else ~/.cache/adapterkit."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "adapterkit"


def open_hub(hub: HubLike = None, token: str | None = None) -> Store:
    """A store for `hub`: an http(s) URL is a server, anything else a folder (see module doc)."""
    if isinstance(hub, (FolderStore, HttpStore)):
        return hub
    if hub is None or str(hub) == "":
        hub = os.environ.get(HUB_ENV) or cache_dir() / "hub"
    text = str(hub)
    if text.startswith(("http://", "https://")):
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        key = (os.getpid(), text, token)  # one client (kept-alive connections) per process
        if key not in _CLIENTS:
            _CLIENTS[key] = HttpStore(text, token)
        return _CLIENTS[key]
    if "://" in text:
        raise HubError(f"unsupported hub {text!r}: give a folder path or an http(s):// URL")
    return FolderStore(text)


def push_adapter(folder: str | os.PathLike, repo_ref: str, hub: HubLike = None, token: str | None = None,
                 tags: Iterable[str] = (), include_checkpoint: bool = False) -> str:
    """Publish adapter folder `folder` as a new version of `repo_ref` (`NS/NAME[:TAG]`).

    Moves `latest`, the tag in `repo_ref` and `tags` to it; returns the version id (sha256 of
    the content: pushing the same content again returns the same id). The training checkpoint
    (`checkpoint/`) is left out unless `include_checkpoint`; files that are not safetensors,
    JSON or text are left out; both are reported. A pickle in the folder refuses the push.
    """
    ref = parse_ref(repo_ref, allow_version=False)
    tags = [t for t in dict.fromkeys([ref.tag, *(check_part(t, "tag") for t in tags)]) if t]
    files, skipped = scan_folder(folder)
    state = [(path, rel) for path, rel in files if is_training_state(rel)]
    if state and not include_checkpoint:
        files = [f for f in files if f not in state]
        size = sum(path.stat().st_size for path, _ in state) / 1e6
        log.warning("not pushed: the training checkpoint (checkpoint/, %d files, %.2f MB) used only by --resume; "
                    "pass --include-checkpoint to publish it", len(state), size)
    if skipped:
        log.warning("not pushed (a hub stores only safetensors, JSON and text files): %s", ", ".join(skipped))
    entries = [FileEntry(rel, *hash_file(path)) for path, rel in files]
    check_entries(entries)
    store = open_hub(hub, token)
    upload = store.begin_upload()
    try:
        for (path, _), e in zip(files, entries):
            if not store.has_blob(e.sha256):
                store.put_blob(upload, e.sha256, e.size, read_chunks(path))
        card = store.commit(upload, ref.repo, entries, tags)
    except BaseException:
        _quietly_abort(store, upload)
        raise
    return card["version"]


def _quietly_abort(store: Store, upload: str) -> None:
    try:
        store.abort_upload(upload)
    except Exception:  # the original error matters more; stale uploads are reaped anyway
        pass


def pull_adapter(spec: str, dest: str | os.PathLike | None = None, hub: HubLike = None) -> Path:
    """Fetch `[hub:]NS/NAME[:TAG|@VERSION]` into `dest` (default: the per-user cache); its path.

    Every file is hashed while it is written and must match the card, and the card's file list
    must hash to the version id, else nothing is left behind and `IntegrityError` is raised.
    """
    ref = parse_ref(spec)
    store = open_hub(hub)
    version = store.resolve(ref)
    card = store.card(ref.repo, version)
    entries = card_entries(card)
    if card.get("version") != version or version_id(entries) != version:
        raise IntegrityError(f"card of {ref.repo}@{version[:12]} does not match its version id; refused")
    if dest is None:
        target = cache_dir() / "pulled" / ref.repo / version
        if target.is_dir() and _matches(target, entries):
            return target
    else:
        target = Path(dest).expanduser()
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise HubError(f"{target} already exists and is not empty; choose another destination")
    return _download(store, ref.repo, version, entries, target)


def _matches(folder: Path, entries: list[FileEntry]) -> bool:
    """True when `folder` holds exactly these files with these hashes (a verified cache hit)."""
    present = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    if present != sorted(e.path for e in entries):
        return False
    return all(hash_file(folder / e.path) == (e.sha256, e.size) for e in entries)


def _download(store: Store, repo: str, version: str, entries: list[FileEntry], target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = target.parent / f".{target.name}.pull-{secrets.token_hex(4)}"
    try:
        for e in entries:
            _fetch(store, e, stage / e.path, f"{repo}@{version[:12]}")
        if target.is_dir() and _is_stale(target, entries):
            shutil.rmtree(target)
        try:
            os.rename(stage, target)
        except OSError:  # someone else finished the same pull first
            if not (target.is_dir() and _matches(target, entries)):
                raise HubError(f"cannot move the pulled adapter into {target}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return target


def _is_stale(target: Path, entries: list[FileEntry]) -> bool:
    """An existing folder that is empty or a cached copy that no longer matches its card."""
    return not any(target.iterdir()) or not _matches(target, entries)


def _fetch(store: Store, e: FileEntry, path: Path, where: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, size = hashlib.sha256(), 0
    with open(path, "xb") as f:
        for chunk in store.read_blob(e.sha256):
            h.update(chunk)
            size += len(chunk)
            f.write(chunk)
    if h.hexdigest() != e.sha256 or size != e.size:
        raise IntegrityError(f"{e.path} of {where}: downloaded content hashes to {h.hexdigest()[:12]}... "
                             f"({size:,} bytes), the card says {e.sha256[:12]}... ({e.size:,} bytes); refused")


def list_repos(pattern: str | None = None, hub: HubLike = None) -> list[dict]:
    """Repositories on the hub whose `NS/NAME` matches the glob `pattern`, with their tags."""
    return open_hub(hub).list_repos(pattern)


def show(spec: str, hub: HubLike = None) -> dict:
    """The card of the version `spec` names."""
    ref = parse_ref(spec)
    store = open_hub(hub)
    return store.card(ref.repo, store.resolve(ref))


def repo_info(repo: str, hub: HubLike = None) -> dict:
    return open_hub(hub).repo_info(repo)


def tag(spec: str, new_tag: str, hub: HubLike = None, token: str | None = None) -> str:
    """Point `new_tag` at the version `spec` (`NS/NAME@VERSION` or `NS/NAME:TAG`) names."""
    ref = parse_ref(spec)
    store = open_hub(hub, token)
    version = check_version(ref.version) if ref.version else store.resolve(ref)
    return store.set_tag(ref.repo, check_part(new_tag, "tag"), version)


def delete_tag(spec: str, hub: HubLike = None, token: str | None = None) -> None:
    """Remove tag `NS/NAME:TAG` (the version stays; `latest` cannot be removed)."""
    ref = parse_ref(spec, allow_version=False)
    open_hub(hub, token).delete_tag(ref.repo, ref.tag)


__all__ = ["Ref", "cache_dir", "delete_tag", "list_repos", "open_hub", "pull_adapter", "push_adapter",
           "repo_info", "show", "tag"]
