"""The hub store: a folder with a documented layout (hub/README.md), safe for many writers.

    ROOT/adapterkit-hub.json                     marker: {"format": "adapterkit.hub", "layout": 1}
    ROOT/blobs/sha256/ab/ab12...ef               file contents, named by their sha256, immutable
    ROOT/repos/NS/NAME/versions/<version>.json   one card per version, written once, never changed
    ROOT/repos/NS/NAME/tags.json                 {"latest": "<version>", "v1": "<version>", ...}
    ROOT/locks/NS/NAME.lock                      flock(2) target serialising a repository's tag moves
    ROOT/tmp/<upload id>/                        uploads in progress, invisible to readers

A push stages its files under tmp/ (hashed while written, refused on mismatch), then commits:
blobs are renamed into place, the card is hard-linked into place (first writer wins, so a
version never changes), and the tags are rewritten to a temporary file and renamed, all under
the repository's lock. Readers only ever see complete blobs, cards and tag files. A push killed
at any point leaves at most an orphaned staging folder, reaped after a day. The same class
backs the embedded default hub and the HTTP server (hub/adapterkit_hub).
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Iterable, Iterator

from adapterkit.hub.card import build_card
from adapterkit.hub.errors import Busy, HubError, IntegrityError, InvalidName, NotFound, TooLarge
from adapterkit.hub.files import FileEntry, check_content, check_entries, read_chunks, version_id
from adapterkit.hub.refs import DEFAULT_TAG, Ref, check_part, check_repo, check_sha256, check_version
from adapterkit.io.atomic import write_json
from adapterkit.io.files import FileFormatError, read_json

MARKER = "adapterkit-hub.json"
LAYOUT = 1
DEFAULT_MAX_FILE_BYTES = 512 << 20
STALE_UPLOAD_SECONDS = 24 * 3600
# How long a writer waits for a repository lock another process holds (its tag moves take
# milliseconds, so a longer hold means a stopped or hung writer); ADAPTERKIT_HUB_LOCK_TIMEOUT overrides.
LOCK_TIMEOUT_SECONDS = 30.0
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


class BlobWriter:
    """Streams one file into an upload: counts, hashes, refuses a mismatch, renames when whole."""

    def __init__(self, part: Path, final: Path, sha256: str, max_bytes: int):
        self.part, self.final, self.sha256, self.max_bytes = part, final, sha256, max_bytes
        self.size, self._hash, self._f = 0, hashlib.sha256(), open(part, "xb", buffering=0)

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise TooLarge(f"upload exceeds this hub's limit of {self.max_bytes:,} bytes per file")
        self._hash.update(chunk)
        view = memoryview(chunk)
        while view:  # unbuffered: what arrived is on disk, and a raw write may be partial
            view = view[self._f.write(view):]

    def finish(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        got = self._hash.hexdigest()
        if got != self.sha256:
            raise IntegrityError(f"upload corrupted: content hashes to {got[:12]}..., not {self.sha256[:12]}...")
        os.replace(self.part, self.final)

    def abort(self) -> None:
        self._f.close()
        self.part.unlink(missing_ok=True)

    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


class FolderStore:
    """A hub in a local folder. All methods are safe under concurrent processes."""

    def __init__(self, root: str | os.PathLike, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                 label: str | None = None):
        self.root = Path(root).expanduser().absolute()
        self.label = label  # how messages name this hub (a server hides its folder)
        self.max_file_bytes = int(max_file_bytes)
        if self.max_file_bytes < 1:
            raise ValueError(f"max_file_bytes must be >= 1, got {max_file_bytes}")

    def __repr__(self) -> str:
        return f"FolderStore({str(self.root)!r})"

    def describe(self) -> str:
        return self.label or f"hub {self.root}"

    # -- layout -------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self.root / "blobs" / "sha256" / sha256[:2] / sha256

    def _repo_dir(self, repo: str) -> Path:
        return self.root / "repos" / check_repo(repo)

    def check_root(self, create: bool) -> bool:
        """True when the root holds a hub; creates one when asked; refuses a foreign folder."""
        if (self.root / MARKER).is_file():
            return True
        # hidden names are another process's marker being written: still an empty folder
        if self.root.exists() and (not self.root.is_dir()
                                   or any(not p.name.startswith(".") for p in self.root.iterdir())):
            if (self.root / MARKER).is_file():  # another process created the hub since the first look
                return True  # (the marker is renamed in before anything else is made)
            raise HubError(f"{self.root} is not an adapterkit hub (no {MARKER}); pick an empty or new folder")
        if not create:
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.root / MARKER, {"format": "adapterkit.hub", "layout": LAYOUT})
        return True

    @contextlib.contextmanager
    def _locked(self, repo: str) -> Iterator[None]:
        import fcntl  # POSIX: the folder store's writers need flock(2)

        ns, name = check_repo(repo).split("/")
        lock = self.root / "locks" / ns / f"{name}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as f:
            _acquire(f, lock.relative_to(self.root) if self.label else lock, repo)  # a server hides its folder
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- reads --------------------------------------------------------------------------
    def tags(self, repo: str) -> dict[str, str]:
        path = self._repo_dir(repo) / "tags.json"
        if not self.check_root(create=False) or not path.is_file():
            raise NotFound(f"no repository {repo} on {self.describe()}")
        return _read(path, f"tags of {repo}", _TAGS)

    def resolve(self, ref: Ref) -> str:
        """The full version id a tag or version prefix names."""
        if ref.version:
            return self._find_version(ref.repo, ref.version)
        tags = self.tags(ref.repo)
        tag = ref.tag or DEFAULT_TAG
        if tag not in tags:
            raise NotFound(f"no tag {tag!r} in {ref.repo} (tags: {', '.join(sorted(tags))})")
        return tags[tag]

    def _find_version(self, repo: str, prefix: str) -> str:
        check_version(prefix)
        self.tags(repo)  # NotFound for a missing repository
        names = [p.stem for p in (self._repo_dir(repo) / "versions").glob(f"{prefix}*.json")]
        if not names:
            raise NotFound(f"no version {prefix} in {repo}")
        if len(names) > 1:
            raise InvalidName(f"version prefix {prefix} is ambiguous in {repo} ({len(names)} matches)")
        return names[0]

    def card(self, repo: str, version: str) -> dict:
        full = self._find_version(repo, version)
        return _read(self._repo_dir(repo) / "versions" / f"{full}.json", f"card of {repo}@{full[:12]}", dict)

    def repo_info(self, repo: str) -> dict:
        tags = self.tags(repo)
        cards = [_read(p, f"card of {repo}", _CARD) for p in (self._repo_dir(repo) / "versions").glob("*.json")]
        by_version: dict[str, list[str]] = {}
        for tag, v in sorted(tags.items()):
            by_version.setdefault(v, []).append(tag)
        versions = [{"version": c["version"], "created": c.get("created"), "size": c.get("size"),
                     "tags": by_version.get(c["version"], [])} for c in cards]
        versions.sort(key=lambda v: (v["created"] or "", v["version"]), reverse=True)
        return {"repo": repo, "tags": tags, "versions": versions}

    def list_repos(self, pattern: str | None = None) -> list[dict]:
        if pattern is not None and len(pattern) > 200:
            raise InvalidName("pattern too long (at most 200 characters)")
        if not self.check_root(create=False):
            return []
        out = []
        for tags_file in sorted((self.root / "repos").glob("*/*/tags.json")):
            repo = f"{tags_file.parent.parent.name}/{tags_file.parent.name}"
            if pattern and not fnmatch.fnmatchcase(repo, pattern):
                continue
            count = sum(1 for _ in (tags_file.parent / "versions").glob("*.json"))
            out.append({"repo": repo, "tags": _read(tags_file, f"tags of {repo}", _TAGS), "num_versions": count})
        return out

    def has_blob(self, sha256: str) -> bool:
        return self.blob_path(sha256).is_file()

    def read_blob(self, sha256: str) -> Iterator[bytes]:
        path = self.blob_path(sha256)
        if not path.is_file():
            raise NotFound(f"blob {sha256} is missing from {self.describe()}")
        return read_chunks(path)

    # -- writes -------------------------------------------------------------------------
    def begin_upload(self) -> str:
        self.check_root(create=True)
        self._reap_stale_uploads()
        upload = secrets.token_hex(16)
        (self.root / "tmp" / upload).mkdir(parents=True)
        return upload

    def _staging(self, upload: str) -> Path:
        if not isinstance(upload, str) or not _UPLOAD_ID.fullmatch(upload):
            raise InvalidName(f"invalid upload id {str(upload)[:40]!r}")
        path = self.root / "tmp" / upload
        if not path.is_dir():
            raise NotFound(f"no upload {upload} in progress (expired or committed)")
        return path

    def blob_writer(self, upload: str, sha256: str, size: int | None = None) -> BlobWriter:
        """A writer for one file of `upload`; refuses a declared size over the limit at once."""
        check_sha256(sha256)
        if size is not None and size > self.max_file_bytes:
            raise TooLarge(f"file of {size:,} bytes exceeds this hub's limit of {self.max_file_bytes:,} bytes")
        staging = self._staging(upload)
        part = staging / f"{sha256}.part-{secrets.token_hex(4)}"
        return BlobWriter(part, staging / sha256, sha256, self.max_file_bytes)

    def put_blob(self, upload: str, sha256: str, size: int, chunks: Iterable[bytes]) -> None:
        with self.blob_writer(upload, sha256, size) as w:
            for chunk in chunks:
                w.write(chunk)
            w.finish()

    def abort_upload(self, upload: str) -> None:
        shutil.rmtree(self._staging(upload), ignore_errors=True)

    def commit(self, upload: str, repo: str, entries: list[FileEntry], tags: Iterable[str] = ()) -> dict:
        """Make the uploaded files a version of `repo`, move `latest` and `tags` to it; its card."""
        check_repo(repo)
        tags = [DEFAULT_TAG, *(check_part(t, "tag") for t in tags if t != DEFAULT_TAG)]
        check_entries(entries)
        staging = self._staging(upload)
        sources = {e.path: self._source(staging, e) for e in entries}
        for e in entries:
            check_content(sources[e.path], e.path)
        version = version_id(entries)
        card = build_card(repo, version, entries, path_of=lambda name: sources[name])
        for e in entries:
            if sources[e.path].parent == staging and sources[e.path].exists():
                blob = self.blob_path(e.sha256)
                blob.parent.mkdir(parents=True, exist_ok=True)
                os.replace(sources[e.path], blob)
        with self._locked(repo):
            card = self._write_card(repo, card)
            self._update_tags(repo, {t: version for t in tags})
        shutil.rmtree(staging, ignore_errors=True)
        return card

    def _source(self, staging: Path, e: FileEntry) -> Path:
        for path in (staging / e.sha256, self.blob_path(e.sha256)):
            if path.is_file():
                if path.stat().st_size != e.size:
                    raise IntegrityError(f"{e.path}: size {path.stat().st_size} does not match the declared {e.size}")
                return path
        raise NotFound(f"{e.path}: content {e.sha256[:12]}... was neither uploaded nor already on the hub")

    def _write_card(self, repo: str, card: dict) -> dict:
        """Write a card once; a version that exists keeps its first card (versions are immutable)."""
        final = self._repo_dir(repo) / "versions" / f"{card['version']}.json"
        if final.is_file():  # identical content pushed again
            return _read(final, f"card of {repo}", dict)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}")
        write_json(tmp, card)  # durable before it is linked into place
        try:
            os.link(tmp, final)
        except FileExistsError:
            card = _read(final, f"card of {repo}", dict)
        finally:
            tmp.unlink()
        return card

    def _update_tags(self, repo: str, moves: dict[str, str | None]) -> dict[str, str]:
        """Apply tag moves (None deletes); caller holds the repository lock."""
        path = self._repo_dir(repo) / "tags.json"
        tags = _read(path, f"tags of {repo}", _TAGS) if path.is_file() else {}
        for tag, version in moves.items():
            if version is None:
                tags.pop(tag, None)
            else:
                tags[tag] = version
        write_json(path, dict(sorted(tags.items())))
        return tags

    def set_tag(self, repo: str, tag: str, version: str) -> str:
        check_part(tag, "tag")
        with self._locked(repo):
            full = self._find_version(repo, version)
            self._update_tags(repo, {tag: full})
        return full

    def delete_tag(self, repo: str, tag: str) -> None:
        check_part(tag, "tag")
        if tag == DEFAULT_TAG:
            raise HubError(f"the {DEFAULT_TAG!r} tag cannot be deleted; move it with `hub tag`")
        with self._locked(repo):
            if tag not in self.tags(repo):
                raise NotFound(f"no tag {tag!r} in {repo}")
            self._update_tags(repo, {tag: None})

    def _reap_stale_uploads(self) -> None:
        cutoff = time.time() - STALE_UPLOAD_SECONDS
        for path in (self.root / "tmp").glob("*"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)


_TAGS: dict = {}  # an object; tag -> version id strings (checked in _read)
_CARD = {"version": str, "created?": (str, None), "size?": (int, None)}


def _read(path: Path, what: str, schema) -> dict:
    """A hub JSON file through the shared validation layer; a corrupt one is an IntegrityError
    naming it (a hub edited or damaged by hand), never a traceback."""
    try:
        value = read_json(path, what, schema=schema, max_bytes=16 << 20)
        if schema is _TAGS and not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise FileFormatError(f"{path}: tags must map names to version ids")
        return value
    except FileFormatError as e:
        raise IntegrityError(f"corrupt {what} (damaged or edited by hand): {e}") from None


def lock_timeout() -> float:
    value = os.environ.get("ADAPTERKIT_HUB_LOCK_TIMEOUT")
    try:
        timeout = float(value) if value else LOCK_TIMEOUT_SECONDS
    except ValueError:
        raise HubError(f"ADAPTERKIT_HUB_LOCK_TIMEOUT={value!r}: expected seconds") from None
    if not timeout >= 0 or timeout == float("inf"):
        raise HubError(f"ADAPTERKIT_HUB_LOCK_TIMEOUT={value!r}: expected a finite number of seconds >= 0")
    return timeout


def _acquire(f, lock: Path, repo: str) -> None:
    """flock(2) `f`, polling, for at most lock_timeout() seconds; Busy names the lock after that."""
    import fcntl

    timeout = lock_timeout()
    deadline, pause = time.monotonic() + timeout, 0.005
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise Busy(f"repository {repo} is locked by another process ({lock}, waited {timeout:g} s); "
                           "if no push or tag change is running, that process is stopped or hung") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
