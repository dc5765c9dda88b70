"""`python -m adapterkit_hub --root DIR [--host H] [--port N] [--token-file F] [--max-upload-mb M]`:
the same server as `adapterkit hub serve`, for machines that only run the server."""
from __future__ import annotations

import argparse
import sys

from adapterkit.hub.errors import HubError
from adapterkit_hub.serve import serve


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m adapterkit_hub", description="Serve an adapterkit hub over HTTP (same as `adapterkit hub serve`).")
    p.add_argument("--root", required=True, help="hub folder (created if missing)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--token-file", help="file of bearer tokens, one a line; without it the hub is read-only")
    p.add_argument("--max-upload-mb", type=float, default=512, help="largest file accepted, MiB (default 512)")
    p.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")
    args = p.parse_args(argv)
    try:
        serve(args.root, args.host, args.port, args.token_file, args.max_upload_mb, args.log_level)
    except HubError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
