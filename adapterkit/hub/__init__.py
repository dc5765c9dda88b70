"""The adapter hub: publish, version and fetch adapters, from a local folder or a team server.

A hub holds repositories `namespace/name`; every push is an immutable version named by the
sha256 of its content, with movable tags (`latest` always). See hub/README.md for the storage
layout and the server (`adapterkit hub serve`).
"""
from adapterkit.hub.api import (
    cache_dir,
    delete_tag,
    list_repos,
    open_hub,
    pull_adapter,
    push_adapter,
    repo_info,
    show,
    tag,
)
from adapterkit.hub.errors import (
    Busy,
    HubError,
    IntegrityError,
    InvalidName,
    NotFound,
    TooLarge,
    Unauthorized,
    UnsupportedFile,
)
from adapterkit.hub.http import HttpStore
from adapterkit.hub.refs import Ref, parse_ref
from adapterkit.hub.store import FolderStore

__all__ = [
    "Busy", "FolderStore", "HttpStore", "HubError", "IntegrityError", "InvalidName", "NotFound", "Ref", "TooLarge",
    "Unauthorized", "UnsupportedFile", "cache_dir", "delete_tag", "list_repos", "open_hub", "parse_ref",
    "pull_adapter", "push_adapter", "repo_info", "show", "tag",
]
