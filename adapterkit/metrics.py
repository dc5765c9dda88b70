"""`adapterkit.metrics` is `adapterkit.data.metrics` (the GLUE metrics, moved next to the data they
score); the old name stays so that existing imports keep working."""
import sys

from adapterkit.data import metrics as _metrics

sys.modules[__name__] = _metrics
