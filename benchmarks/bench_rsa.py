"""Random Sparse Attention against dense attention on CPU: time, throughput and peak memory.

Compares, in one process and interleaved (one call of each variant per round,
medians over rounds), for batch 1, 12 heads, head dim 64, block 64:
  dense   torch.nn.functional.scaled_dot_product_attention, no mask
  mask    the same with the RSA pattern as a boolean (1, heads, seq, seq) mask
  flex    FlexAttention (torch.compile'd) with the RSA pattern as a BlockMask (forward only)
  rsa     adapterkit.ops.rsa_attention (the compiled kernel)
over sequence lengths, densities, float32 / bfloat16, forward and forward+backward.
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
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from adapterkit.ops import extension, rsa_attention, rsa_layout
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
    p.add_argument("--no-flex", action="store_true", help="skip FlexAttention (its compile is slow)")
    p.add_argument("--mask-max-mb", type=float, default=4096,
                   help="skip the boolean-mask SDPA when its mask would exceed this (default 4096)")
    p.add_argument("--peak-gflops", type=float, default=350.0,
                   help="machine float32 peak for the fraction-of-peak column (default 350: 2 cores)")
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
    if HEADS * seq * seq / 2**20 <= args.mask_max_mb:
        mask = rsa_token_mask(layout, BLOCK, seq, causal=False)[None]      # (1, H, S, S) bool
        fns["mask"] = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if flex is not None:
        block_mask = flex_block_mask(layout, seq)
        fns["flex"] = lambda q, k, v: flex(q, k, v, block_mask=block_mask)
    fns["rsa"] = lambda q, k, v: rsa_attention(q, k, v, block_size=BLOCK, density=density)
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


def setup(seq: int, dtype: torch.dtype, density: float, args, flex):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, HEADS, seq, HEAD_DIM, generator=g).to(dtype) for _ in range(3))
    fns, layout = variants(q, k, v, density, args, flex)
    qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
    calls = {"fwd": {n: (lambda f=f: f(q, k, v)) for n, f in fns.items()},
             "fwd+bwd": {n: forward_backward(f, qg, kg, vg) for n, f in fns.items() if n != "flex"}}
    return calls, layout


def measure(seq: int, dtype: torch.dtype, density: float, args, flex) -> list[dict]:
    calls, layout = setup(seq, dtype, density, args, flex)
    rows = []
    for mode, ctx in (("fwd", torch.no_grad), ("fwd+bwd", torch.enable_grad)):
        with ctx():
            ms, cpu_ms = interleaved(calls[mode], args.rounds)
        flops = rsa_flops(layout, seq) * (1 if mode == "fwd" else 3.5)
        dense_flops = 4 * HEAD_DIM * HEADS * seq * seq * (1 if mode == "fwd" else 3.5)
        rows.append({"seq": seq, "dtype": str(dtype).replace("torch.", ""), "density": density,
                     "mode": mode, "ms": ms, "cpu_ms": cpu_ms,
                     "selected": float((layout >= 0).sum()) / (HEADS * layout.shape[1] ** 2),
                     "rsa_gflops": flops / ms["rsa"] / 1e6, "dense_gflops": dense_flops / ms["dense"] / 1e6,
                     # per busy core: FLOPs over the CPU time the process got (robust to other load)
                     "rsa_gflops_per_core": flops / cpu_ms["rsa"] / 1e6,
                     "dense_gflops_per_core": dense_flops / cpu_ms["dense"] / 1e6})
        report(rows[-1], args)
    return rows


def measure_memory(row: dict, args, flex) -> None:
    calls, _ = setup(row["seq"], getattr(torch, row["dtype"]), row["density"], args, flex)
    with (torch.no_grad if row["mode"] == "fwd" else torch.enable_grad)():
        row["peak_mb"] = {n: peak_mb(c) for n, c in calls[row["mode"]].items()}
    mem = " ".join(f"{n}={v:.0f}MB" for n, v in row["peak_mb"].items() if v is not None)
    print(f"seq {row['seq']:5d} {row['dtype']:8s} d={row['density']:.3f} {row['mode']:7s} | peak {mem}",
          flush=True)


def report(row: dict, args) -> None:
    ms = row["ms"]
    speed = " ".join(f"{n}={ms[n]:.1f}" for n in ms)
    ratios = " ".join(f"{n}/rsa={ms[n] / ms['rsa']:.2f}x" for n in ms if n != "rsa")
    core_peak = args.peak_gflops / args.threads
    frac = ""
    if row["dtype"] == "float32":
        frac = (f" ({row['rsa_gflops'] / args.peak_gflops:.0%} of peak; per busy core "
                f"{row['rsa_gflops_per_core']:.0f} = {row['rsa_gflops_per_core'] / core_peak:.0%}, "
                f"dense {row['dense_gflops_per_core'] / core_peak:.0%})")
    print(f"seq {row['seq']:5d} {row['dtype']:8s} d={row['density']:.3f} {row['mode']:7s} | ms {speed} | "
          f"{ratios} | rsa {row['rsa_gflops']:.0f} GFLOP/s{frac}, dense {row['dense_gflops']:.0f}",
          flush=True)


def markdown(paths: list[str], peak_gflops: float, threads: int) -> str:
    """The saved rows as one markdown table: times (ms), speed-ups of rsa, throughput, peak memory."""
    lines = ["| seq | dtype | density | pass | dense ms | mask ms | flex ms | rsa ms | dense/rsa | "
             "mask/rsa | flex/rsa | rsa GFLOP/s | rsa / dense per busy core | peak MB dense / mask / flex / rsa |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        for r in json.loads(Path(path).read_text())["rows"]:
            ms, mem = r["ms"], r.get("peak_mb", {})
            cell = lambda n: f"{ms[n]:.0f}" if n in ms else "-"                      # noqa: E731
            ratio = lambda n: f"{ms[n] / ms['rsa']:.2f}x" if n in ms else "-"        # noqa: E731
            peak = " / ".join(f"{mem[n]:.0f}" if mem.get(n) is not None else "-"
                              for n in ("dense", "mask", "flex", "rsa"))
            gflops = f"{r['rsa_gflops']:.0f}"
            core = f"{r['rsa_gflops_per_core']:.0f} / {r['dense_gflops_per_core']:.0f}"
            if r["dtype"] == "float32":
                gflops += f" ({r['rsa_gflops'] / peak_gflops:.0%})"
                core_peak = peak_gflops / threads
                core = (f"{r['rsa_gflops_per_core']:.0f} ({r['rsa_gflops_per_core'] / core_peak:.0%}) / "
                        f"{r['dense_gflops_per_core']:.0f} ({r['dense_gflops_per_core'] / core_peak:.0%})")
            lines.append(f"| {r['seq']} | {r['dtype']} | 1/{round(1 / r['density'])} | {r['mode']} | "
                         f"{cell('dense')} | {cell('mask')} | {cell('flex')} | {cell('rsa')} | "
                         f"{ratio('dense')} | {ratio('mask')} | {ratio('flex')} | {gflops} | {core} | {peak} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.table:
        print(markdown(args.table, args.peak_gflops, args.threads))
        return
    torch.set_num_threads(args.threads)
    if not extension.available("cpu"):
        sys.exit("the compiled RSA kernel is not built: this benchmark would time the reference")
    flex = None
    if not args.no_flex:
        from torch.nn.attention.flex_attention import flex_attention

        flex = torch.compile(flex_attention)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"kernel {torch.ops.adapterkit.rsa_cpu_info()}, command: {' '.join(sys.argv)}", flush=True)
    rows = []
    for dtype in [getattr(torch, d) for d in args.dtypes]:
        for seq in args.seqs:
            for density in args.densities:
                rows += measure(seq, dtype, density, args, flex)
    fresh_allocations()
    for row in rows:
        measure_memory(row, args, flex)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"argv": sys.argv, "torch": torch.__version__, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
