"""`adapterkit.sites` is `adapterkit.sharing.sites` (moved next to the sharing plan it feeds); the
old name stays so that existing imports keep working."""
import sys

from adapterkit.sharing import sites as _sites

sys.modules[__name__] = _sites
