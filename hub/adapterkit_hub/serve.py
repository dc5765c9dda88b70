"""Run the hub server with uvicorn."""
from __future__ import annotations

import logging
from pathlib import Path

from adapterkit_hub.app import create_app, read_tokens

log = logging.getLogger("adapterkit.hub.server")


def serve(root: str | Path, host: str = "127.0.0.1", port: int = 8765, token_file: str | Path | None = None,
          max_upload_mb: float = 512, log_level: str = "info") -> None:
    """Serve the hub in folder `root` on http://host:port until interrupted."""
    import uvicorn

    tokens = read_tokens(token_file) if token_file else None
    app = create_app(root, tokens=tokens, max_file_bytes=int(max_upload_mb * (1 << 20)))
    mode = "read-write (bearer token)" if tokens else "read-only (no --token-file)"
    print(f"adapterkit hub: serving {Path(root).absolute()} on http://{host}:{port}, {mode}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug")
