"""`adapterkit info`: versions and which compiled kernels this installation can use."""
from __future__ import annotations

import json
import platform
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("info")(info)


def collect() -> dict:
    """Versions of adapterkit, Python, torch, transformers, and the state of the kernels."""
    import torch
    import transformers

    import adapterkit
    from adapterkit.ops.extension import kernel_status

    status = kernel_status()
    return {
        "adapterkit": adapterkit.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "kernels": {
            "rsa_cpu": {"available": status["cpu"], "detail": status["cpu_detail"] or status["reasons"].get("cpu"),
                        "source": status["sources"].get("cpu")},
            "rsa_cuda": {"available": status["cuda"], "detail": None if status["cuda"] else status["reasons"].get("cuda"),
                         "source": status["sources"].get("cuda")},
        },
        "rsa_fallback": status["fallback"],  # what runs where a kernel is not available
    }


def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON. Default: text.")] = False,
) -> None:
    """Print versions and which compiled kernels (RSA attention, CPU and CUDA) are available."""
    report = collect()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for key in ("adapterkit", "python", "torch", "torch_cuda", "cuda_available", "transformers", "threads"):
        typer.echo(f"{key:<15} {report[key]}")
    for name, kernel in report["kernels"].items():
        state = f"available, {kernel['source']}" if kernel["available"] else "NOT available"
        detail = f"  {kernel['detail']}" if kernel["detail"] else ""
        typer.echo(f"kernel {name:<8} {state}{detail}")
    if not all(kernel["available"] for kernel in report["kernels"].values()):
        typer.echo(f"without a kernel: {report['rsa_fallback']}")
