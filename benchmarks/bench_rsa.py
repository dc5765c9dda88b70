"""Random Sparse Attention against dense attention on CPU: time, throughput and peak memory.

Compares, in one process and interleaved (one call of each variant per round,
medians over rounds), for batch 1, 12 heads, head dim 64, block 64:
  dense   torch.nn.functional.scaled_dot_product_attention, no mask
  mask    the same with the RSA pattern as a boolean (1, heads, seq, seq) mask
  flex    FlexAttention (torch.compile'd) with the RSA pattern as a BlockMask (forward only)
  rsa     adapterkit.ops.rsa_attention (the compiled kernel: prebuilt, or with
          --kernel-source first-use the first-use build, see adapterkit/ops/build.py)
  fallback  adapterkit.ops.blocksparse.fallback_attention, what rsa_attention runs
          where no kernel loads (block-sparse SDPA on gathered key blocks)
over sequence lengths, densities, float32 / bfloat16, forward and forward+backward.
The prebuilt and the first-use-built kernel register the same op names, so they
cannot share a process: compare their ratios to dense from one run each.
Times are medians of wall-clock milliseconds; process CPU time is recorded too,
and "per busy core" throughput (FLOPs / CPU seconds) is compared with the peak of
one core, which stays meaningful when other processes share the machine.
Peak memory is measured after all timings, one call per variant: the rise of the
process's peak resident set (VmHWM, reset before the call) over the resident set
before it, so inputs are not counted. Before each call freed heap memory is
returned to the OS (malloc_trim) and large allocations are served by fresh mmaps
(mallopt), so memory that malloc reuses still counts in the peak.

    python3 benchmarks/bench_rsa.py --quick          # seq 4096, density 1/4 (a few minutes)
    python3 benchmarks/bench_rsa.py                  # the full table (long)
    python3 benchmarks/bench_rsa.py --kernel-source first-use --variants dense rsa
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

if "--kernel-source" in sys.argv and "first-use" in sys.argv:
    sys.modules["adapterkit._C"] = None   # hide the prebuilt module: the first-use build loads

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from adapterkit.ops import rsa_attention, rsa_layout
from adapterkit.ops.blocksparse import fallback_attention
from adapterkit.ops.layout import rsa_token_mask

HEADS, HEAD_DIM, BLOCK = 12, 64, 64


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="seq 4096, density 1/4, 3 rounds")
    p.add_argument("--seqs", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    p.add_argument("--densities", type=float, nargs="+", default=[1 / 2, 1 / 4, 1 / 8])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per variant (median)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=["dense", "mask", "flex", "rsa", "fallback"],
                   help="which of dense, mask, flex, rsa, fallback to time (default: all)")
    p.add_argument("--kernel-source", choices=["prebuilt", "first-use"], default="prebuilt",
                   help="rsa from the prebuilt adapterkit._C or the first-use build (default prebuilt)")
    p.add_argument("--mask-max-mb", type=float, default=4096,
                   help="skip the boolean-mask SDPA when its mask would exceed this (default 4096)")
    p.add_argument("--memory", action="store_true", help="also measure each call's peak memory")
    p.add_argument("--out", default="runs/bench_rsa.json", help="JSON results (default runs/bench_rsa.json)")
    p.add_argument("--table", nargs="+", metavar="JSON", help="only print a markdown table of saved results")
    args = p.parse_args(argv)
    if args.quick:
        args.seqs, args.densities, args.rounds = [4096], [1 / 4], 3
    return args


# ---------------------------------------------------------------- memory

def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _libc():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except OSError:
        return None


def fresh_allocations() -> None:
    """Make glibc mmap (and unmap on free) every allocation above 64 KiB, so RSS peaks are real."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD


def _release_free_memory() -> None:
    """Give freed heap pages back to the OS, so reusing them shows up in RSS again."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def peak_mb(fn) -> float | None:
    """Rise of peak RSS while fn runs, in MiB (None where /proc cannot be reset)."""
    gc.collect()
    _release_free_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    before = _status_kb("VmRSS")
    result = fn()
    peak = _status_kb("VmHWM")
    del result
    return None if before is None or peak is None else (peak - before) / 1024


# ---------------------------------------------------------------- variants

def flex_block_mask(layout: torch.Tensor, seq: int):
    from torch.nn.attention.flex_attention import BlockMask

    heads, nb, k = layout.shape
    counts = (layout >= 0).sum(-1).to(torch.int32)[None]               # (1, H, nb): all blocks full
    idx = torch.zeros(1, heads, nb, nb, dtype=torch.int32)
    idx[..., :k] = layout.clamp(min=0)[None]
    return BlockMask.from_kv_blocks(torch.zeros_like(counts), idx.clone(), counts, idx,
                                    BLOCK_SIZE=BLOCK, seq_lengths=(seq, seq))


def variants(q, k, v, density: float, args, flex):
    seq = q.shape[2]
    layout = rsa_layout(seq, HEADS, block_size=BLOCK, density=density)
    fns = {"dense": lambda q, k, v: F.scaled_dot_product_attention(q, k, v)}
    if "mask" in args.variants and HEADS * seq * seq / 2**20 <= args.mask_max_mb:
        mask = rsa_token_mask(layout, BLOCK, seq, causal=False)[None]      # (1, H, S, S) bool
        fns["mask"] = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if flex is not None:
        block_mask = flex_block_mask(layout, seq)
        fns["flex"] = lambda q, k, v: flex(q, k, v, block_mask=block_mask)
    if "rsa" in args.variants:
        fns["rsa"] = lambda q, k, v: rsa_attention(q, k, v, block_size=BLOCK, density=density)
    if "fallback" in args.variants:
        scale = HEAD_DIM ** -0.5
        fns["fallback"] = lambda q, k, v: fallback_attention(q, k, v, layout, None, BLOCK, False, scale)
    return fns, layout


def forward_backward(fn, q, k, v):
    def run():
        out = fn(q, k, v)
        out.backward(torch.ones_like(out))
        return out
    return run


def rsa_flops(layout: torch.Tensor, seq: int) -> float:
    """Forward FLOPs of the selected blocks: 2 (QK^T) + 2 (PV) per score and head dim."""
    rows = torch.clamp(seq - torch.arange(layout.shape[1]) * BLOCK, max=BLOCK)       # query rows
    keys = torch.where(layout >= 0, rows[layout.clamp(min=0).long()], 0).sum(-1)     # (H, nb)
    return float(4 * HEAD_DIM * (keys * rows[None, :]).sum())


# ---------------------------------------------------------------- measurement

def interleaved(fns: dict, rounds: int) -> tuple[dict, dict]:
    """Median wall and process-CPU milliseconds per variant, one call of each per round."""
    for fn in fns.values():
        fn()                                   # warm up (and compile)
    wall = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    med = lambda ts: {n: statistics.median(t) * 1e3 for n, t in ts.items()}  # noqa: E731
    return med(wall), med(cpu)


def _backward_works(fn, q, k, v) -> bool:
    """FlexAttention has had no CPU backward in some torch versions: try it once."""
    try:
        forward_backward(fn, q, k, v)()
        return True
    except Exception as e:  # noqa: BLE001 - any failure means "no backward here"
        print(f"  (no backward: {type(e).__name__}: {str(e).splitlines()[0][:100]})", flush=True)
        return False


def setup(seq: int, dtype: torch.dtype, density: float, args, flex):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, HEADS, seq, HEAD_DIM, generator=g).to(dtype) for _ in range(3))
    fns, layout = variants(q, k, v, density, args, flex)
    qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
    backward = {n: f for n, f in fns.items() if n != "flex" or _backward_works(f, qg, kg, vg)}
    calls = {"fwd": {n: (lambda f=f: f(q, k, v)) for n, f in fns.items()},
             "fwd+bwd": {n: forward_backward(f, qg, kg, vg) for n, f in backward.items()}}
    return calls, layout


def measure(seq: int, dtype: torch.dtype, density: float, args, flex) -> list[dict]:
    calls, layout = setup(seq, dtype, density, args, flex)
    rows = []
    for mode, ctx in (("fwd", torch.no_grad), ("fwd+bwd", torch.enable_grad)):
        with ctx():
            ms, cpu_ms = interleaved(calls[mode], args.rounds)
        flops = rsa_flops(layout, seq) * (1 if mode == "fwd" else 3.5)
        row = {"seq": seq, "dtype": str(dtype).replace("torch.", ""), "density": density, "mode": mode,
               "ms": ms, "cpu_ms": cpu_ms, "kernel_source": args.kernel_source,
               "selected": float((layout >= 0).sum()) / (HEADS * layout.shape[1] ** 2)}
        if "rsa" in ms:
            row["rsa_gflops"] = flops / ms["rsa"] / 1e6
            row["rsa_gflops_per_core"] = flops / cpu_ms["rsa"] / 1e6  # robust to other load
        rows.append(row)
        report(row)
    return rows


def measure_memory(row: dict, args, flex) -> None:
    calls, _ = setup(row["seq"], getattr(torch, row["dtype"]), row["density"], args, flex)
    with (torch.no_grad if row["mode"] == "fwd" else torch.enable_grad)():
        row["peak_mb"] = {n: peak_mb(c) for n, c in calls[row["mode"]].items()}
    mem = " ".join(f"{n}={v:.0f}MB" for n, v in row["peak_mb"].items() if v is not None)
    print(f"seq {row['seq']:5d} {row['dtype']:8s} d={row['density']:.3f} {row['mode']:7s} | peak {mem}",
          flush=True)


def report(row: dict) -> None:
    ms = row["ms"]
    speed = " ".join(f"{n}={ms[n]:.1f}" for n in ms)
    ratios = " ".join(f"dense/{n}={ms['dense'] / ms[n]:.2f}x" for n in ms if n != "dense")
    gflops = f" | rsa {row['rsa_gflops']:.0f} GFLOP/s" if "rsa_gflops" in row else ""
    print(f"seq {row['seq']:5d} {row['dtype']:8s} d={row['density']:.3f} {row['mode']:7s} | ms {speed} | "
          f"{ratios}{gflops}", flush=True)


NAMES = ("mask", "flex", "rsa", "fallback")


def markdown(paths: list[str]) -> str:
    """The saved rows as one markdown table: median ms per variant and speed-ups over dense SDPA."""
    lines = ["| seq | dtype | density | pass | kernel | dense ms | " + " | ".join(f"{n} ms" for n in NAMES) +
             " | " + " | ".join(f"dense/{n}" for n in NAMES) + " |",
             "|---|---|---|---|---|---|" + "---|" * (2 * len(NAMES))]
    for path in paths:
        for r in json.loads(Path(path).read_text())["rows"]:
            ms = r["ms"]
            cells = [f"{ms[n]:.0f}" if n in ms else "-" for n in NAMES]
            ratios = [f"{ms['dense'] / ms[n]:.2f}x" if n in ms else "-" for n in NAMES]
            lines.append(f"| {r['seq']} | {r['dtype']} | 1/{round(1 / r['density'])} | {r['mode']} | "
                         f"{r.get('kernel_source', 'prebuilt')} | {ms['dense']:.0f} | " + " | ".join(cells) +
                         " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.table:
        print(markdown(args.table))
        return
    torch.set_num_threads(args.threads)
    from adapterkit.ops import kernel_status

    status = kernel_status()
    if "rsa" in args.variants and not status["cpu"]:
        sys.exit(f"no compiled RSA kernel ({status['reasons'].get('cpu')}): rsa would time the fallback")
    flex = None
    if "flex" in args.variants:
        from torch.nn.attention.flex_attention import flex_attention

        flex = torch.compile(flex_attention)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, kernel "
          f"{status['cpu_detail']} from {status['sources'].get('cpu')}, command: {' '.join(sys.argv)}", flush=True)
    rows = []
    for dtype in [getattr(torch, d) for d in args.dtypes]:
        for seq in args.seqs:
            for density in args.densities:
                rows += measure(seq, dtype, density, args, flex)
    if args.memory:
        fresh_allocations()
        for row in rows:
            measure_memory(row, args, flex)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"argv": sys.argv, "torch": torch.__version__, "kernel": status, "rows": rows},
                              indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
