"""adapterkit: bottleneck adapters with cross-layer sharing on any Hugging Face transformer.

    import adapterkit as ak
    ak.add_adapter(model, "cola", ak.BottleneckConfig(bottleneck_dim=64, sharing=3))
    ak.train_adapter(model, "cola")

Names are resolved lazily, so `import adapterkit` imports neither torch nor transformers
nor any optional extra; the first use of a name loads the module that defines it.
"""
from __future__ import annotations

from adapterkit.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "BottleneckConfig": "adapterkit.config",
    "parse_sharing": "adapterkit.config",
    "AdapterkitError": "adapterkit.errors",
    "IncompatibleAdapterError": "adapterkit.errors",
    "PlacementError": "adapterkit.errors",
    "BottleneckAdapter": "adapterkit.modules",
    "register_adapter_kind": "adapterkit.modules",
    "find_sites": "adapterkit.sharing.sites",
    "SharingPlan": "adapterkit.sharing",
    "add_adapter": "adapterkit.model",
    "remove_adapter": "adapterkit.model",
    "set_active": "adapterkit.model",
    "active_adapters": "adapterkit.model",
    "list_adapters": "adapterkit.model",
    "train_adapter": "adapterkit.model",
    "count_parameters": "adapterkit.model",
    "adapter_parameters": "adapterkit.model",
    "head_parameters": "adapterkit.model",
    "plan_adapter": "adapterkit.model",
    "route": "adapterkit.routing",
    "forward_rows": "adapterkit.routing",
    "save_adapter": "adapterkit.io",
    "load_adapter": "adapterkit.io",
    "read_manifest": "adapterkit.io",
    "push_adapter": "adapterkit.hub",
    "pull_adapter": "adapterkit.hub",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
