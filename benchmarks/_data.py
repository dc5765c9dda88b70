"""Where the benchmarks' real data is: imported for its one effect, pointing adapterkit (and the
processes a benchmark starts) at ../shared/data next to the checkout, or $ADAPTERKIT_TEST_DATA,
through the library's documented environment variables. Variables already set win."""
import os
from pathlib import Path

ROOT = Path(os.environ.get("ADAPTERKIT_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
for _var, _sub in (("ADAPTERKIT_DATA_DIR", "glue"), ("ADAPTERKIT_AMAZON_DIR", "amazon")):
    if (ROOT / _sub).is_dir():
        os.environ.setdefault(_var, str(ROOT / _sub))
