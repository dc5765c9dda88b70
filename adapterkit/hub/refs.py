"""Names on a hub and references to what they hold.

    team/sst2-adapter            repository `namespace/name` (its `latest` tag)
    team/sst2-adapter:v1         a tag
    team/sst2-adapter@3fa9c2e1   a version (its sha256, or a unique prefix of 8+ hex digits)
    hub:team/sst2-adapter:v1     the same, as `load_adapter` accepts it

Every name that becomes a path on disk is checked here first, by the client and again by the
server: one character class, a length limit, no leading dot, so `..`, absolute paths, hidden
files and separators can never be spelled.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from adapterkit.hub.errors import InvalidName

_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_VERSION = re.compile(r"[0-9a-f]{8,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FILE_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
MAX_FILE_DEPTH = 4
MAX_FILE_PATH = 255
DEFAULT_TAG = "latest"


def check_part(value: str, what: str) -> str:
    """A namespace, repository name or tag: letters, digits, `._-`, at most 64 characters."""
    if not isinstance(value, str) or not _PART.fullmatch(value):
        shown = value if isinstance(value, str) and len(value) <= 80 else f"{str(value)[:80]}..."
        raise InvalidName(f"invalid {what} {shown!r}: use 1-64 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")
    return value


def check_repo(repo: str) -> str:
    """`namespace/name`, each part as `check_part` allows."""
    parts = repo.split("/") if isinstance(repo, str) else []
    if len(parts) != 2:
        raise InvalidName(f"invalid repository {str(repo)[:80]!r}: expected NAMESPACE/NAME")
    check_part(parts[0], "namespace")
    check_part(parts[1], "repository name")
    return repo


def check_version(value: str) -> str:
    """A version id or a prefix of it: 8-64 lowercase hex digits."""
    if not isinstance(value, str) or not _VERSION.fullmatch(value):
        raise InvalidName(f"invalid version {str(value)[:80]!r}: expected 8-64 lowercase hex digits (sha256)")
    return value


def check_sha256(value: str) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise InvalidName(f"invalid sha256 {str(value)[:80]!r}: expected 64 lowercase hex digits")
    return value


def check_file_path(path: str) -> str:
    """A file inside an adapter: relative, `/`-separated, no hidden or parent components."""
    if not isinstance(path, str) or len(path) > MAX_FILE_PATH:
        raise InvalidName(f"invalid file name {str(path)[:80]!r}: at most {MAX_FILE_PATH} characters")
    parts = path.split("/")
    if len(parts) > MAX_FILE_DEPTH or not all(_FILE_PART.fullmatch(p) for p in parts):
        raise InvalidName(f"invalid file name {path!r}: relative path of letters, digits, '._-', "
                          f"no hidden or '..' parts, at most {MAX_FILE_DEPTH} levels")
    return path


@dataclass(frozen=True)
class Ref:
    """A repository plus either a tag or a version (prefix)."""

    repo: str
    tag: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        if self.version:
            return f"{self.repo}@{self.version}"
        return f"{self.repo}:{self.tag or DEFAULT_TAG}"


def parse_ref(text: str, allow_version: bool = True) -> Ref:
    """Parse `[hub:]REPO[:TAG|@VERSION]`; no tag and no version means the `latest` tag."""
    if not isinstance(text, str) or not text:
        raise InvalidName(f"invalid reference {text!r}: expected NAMESPACE/NAME[:TAG|@VERSION]")
    body = text[len("hub:"):] if text.startswith("hub:") else text
    if "@" in body:
        if not allow_version:
            raise InvalidName(f"invalid reference {text!r}: a version cannot be given here, only a tag")
        repo, version = body.split("@", 1)
        return Ref(check_repo(repo), version=check_version(version))
    repo, colon, tag = body.partition(":")
    return Ref(check_repo(repo), tag=check_part(tag, "tag") if colon else DEFAULT_TAG)
