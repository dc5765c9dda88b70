"""First-use build of the RSA kernel: compile time, then the load time of later processes.

Each measurement is a fresh Python process (the way a user meets it), with the prebuilt
`adapterkit._C` hidden where the first-use build is measured:
  compile     an empty cache folder: the first `extension.load()` compiles the packaged sources
  cache hit   the same folder again: the next processes load the compiled library
  prebuilt    `adapterkit._C` imported from the package (install.sh / --no-build-isolation)
Reported per process: seconds inside `extension.load()` and the whole process's wall time
(`python -c` with torch imported, so the difference between rows is the kernel's share).

    python3 benchmarks/bench_rsa_build.py --cache /tmp/kernels            # compile, then 5 loads
    python3 benchmarks/bench_rsa_build.py --cache /tmp/kernels --no-compile   # loads only
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys, time
if {hide}:
    sys.modules["adapterkit._C"] = None
import torch
from adapterkit.ops import extension
start = time.perf_counter()
state = extension.load()
print(json.dumps({{"load_s": time.perf_counter() - start, "source": state.sources.get("cpu"),
                  "reason": state.reasons.get("cpu")}}))
"""


def probe(hide_prebuilt: bool, cache: Path) -> dict:
    env = {**os.environ, "ADAPTERKIT_KERNEL_CACHE": str(cache)}
    env.pop("ADAPTERKIT_SKIP_BUILD", None)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE.format(hide=hide_prebuilt)], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=3600)
    if done.returncode != 0:
        sys.exit(f"probe failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    row = json.loads(done.stdout.splitlines()[-1])
    row["process_s"] = time.perf_counter() - start
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", required=True, help="kernel cache folder (emptied first unless --no-compile)")
    p.add_argument("--repeats", type=int, default=5, help="processes per load measurement (median)")
    p.add_argument("--no-compile", action="store_true", help="keep the cache; time only the loads")
    args = p.parse_args()
    cache = Path(args.cache)
    rows = {}
    if not args.no_compile:
        shutil.rmtree(cache, ignore_errors=True)
        rows["compile"] = [probe(True, cache)]
        print(f"compile: {rows['compile'][0]}", flush=True)
    rows["cache hit"] = [probe(True, cache) for _ in range(args.repeats)]
    rows["prebuilt"] = [probe(False, cache) for _ in range(args.repeats)]
    for name, runs in rows.items():
        med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
        print(f"{name:<9} load {med('load_s'):8.3f} s   process {med('process_s'):7.2f} s   "
              f"({len(runs)} run(s); {runs[0]['source'] or runs[0]['reason']})", flush=True)


if __name__ == "__main__":
    main()
