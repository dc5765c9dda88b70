"""Run the hub server with uvicorn."""
from __future__ import annotations

import logging
from pathlib import Path

from adapterkit_hub.app import create_app, read_tokens

log = logging.getLogger("adapterkit.hub.server")


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def check_settings(port: int, max_upload_mb: float, log_level: str) -> None:
    """Refuse bad server settings before anything starts (one HubError each)."""
    from adapterkit.config import check_number
    from adapterkit.errors import AdapterkitError
    from adapterkit.hub.errors import HubError

    try:
        check_number("--port", port, minimum=1, maximum=65535, integer=True)
        check_number("--max-upload-mb", max_upload_mb, above=0.0)
    except AdapterkitError as e:
        raise HubError(str(e)) from None
    if int(max_upload_mb * (1 << 20)) < 1:
        raise HubError(f"--max-upload-mb {max_upload_mb!r} allows no byte at all")
    if log_level not in LOG_LEVELS:
        raise HubError(f"--log-level must be one of {', '.join(LOG_LEVELS)}; got {log_level!r}")


def serve(root: str | Path, host: str = "127.0.0.1", port: int = 8765, token_file: str | Path | None = None,
          max_upload_mb: float = 512, log_level: str = "info") -> None:
    """Serve the hub in folder `root` on http://host:port until interrupted."""
    import uvicorn

    check_settings(port, max_upload_mb, log_level)
    tokens = read_tokens(token_file) if token_file else None
    app = create_app(root, tokens=tokens, max_file_bytes=int(max_upload_mb * (1 << 20)))
    mode = "read-write (bearer token)" if tokens else "read-only (no --token-file)"
    print(f"adapterkit hub: serving {Path(root).absolute()} on http://{host}:{port}, {mode}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug")
