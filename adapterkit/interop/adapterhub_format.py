"""AdapterHub's bottleneck adapter format: file names, the BnConfig flags that match adapterkit's
computation, where each family keeps its adapter modules, and safe readers/writers.
Checked against `adapters` 1.3.0 (see adapterkit.interop.adapterhub for the why)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from adapterkit.errors import AdapterkitError
from adapterkit.io.atomic import atomic_write
from adapterkit.io.atomic import write_json as atomic_json
from adapterkit.io.files import read_safetensors

CONFIG_FILE = "adapter_config.json"
SAFE_WEIGHTS_FILE = "adapter.safetensors"
BIN_WEIGHTS_FILE = "pytorch_adapter.bin"
HEAD_CONFIG_FILE = "head_config.json"
SAFE_HEAD_FILE = "model_head.safetensors"
BIN_HEAD_FILE = "pytorch_model_head.bin"
WEIGHT_FORMATS = ("both", "safetensors", "bin")
FORMAT_VERSION = "adapters.1.3.0"  # the `adapters` release these files were checked against

ACTIVATIONS = ("gelu", "relu", "swish", "silu", "tanh")  # same functions under the same names

# The AdapterHub BnConfig flags that reproduce adapterkit's computation (see the docstring).
EXACT_FLAGS = {
    "original_ln_before": False,
    "original_ln_after": True,
    "residual_before_ln": True,
    "adapter_residual_before_ln": False,
    "ln_before": False,
    "ln_after": False,
    "is_parallel": False,
    "use_gating": False,
    "phm_layer": False,
    "inv_adapter": None,
    "cross_adapter": False,
    "stochastic_depth": 0.0,
}

# adapterkit parameter name -> AdapterHub parameter name, inside one adapter module
PARAM_NAMES = {
    "down.weight": "adapter_down.0.weight",
    "down.bias": "adapter_down.0.bias",
    "up.weight": "adapter_up.weight",
    "up.bias": "adapter_up.bias",
}

# Site kind -> (regex on the end of an adapterkit site path, replacement giving the module
# that holds AdapterHub's `adapters` dict for that site).
_SUBLAYER = {  # BERT-likes: the adapter lives in BertSelfOutput / BertOutput
    "attn": (r"\.attention\.output\.dense$", ".attention.output.adapters"),
    "ffn": (r"\.output\.dense$", ".output.adapters"),
}
_T5 = {
    "attn": (r"\.layer\.0\.SelfAttention\.o$", ".layer.0.adapters"),
    "ffn": (r"\.layer\.(1|2)\.DenseReluDense\.wo$", r".layer.\1.adapters"),
}


def _on_layer(attn: str, ffn: str) -> dict[str, tuple[str, str]]:
    """Families where `adapters` hangs attention_adapters / output_adapters on the layer."""
    return {
        "attn": (rf"\.{re.escape(attn)}$", ".attention_adapters.adapters"),
        "ffn": (rf"\.{re.escape(ffn)}$", ".output_adapters.adapters"),
    }


# Each family's export was checked against `adapters` 1.3.0 to 1e-5 on tiny models; the test
# suite repeats it for the families tests/tiny_models builds (all but xlm-roberta, mbart, mt5).
FAMILY_RULES: dict[str, dict[str, tuple[str, str]]] = {
    "bert": _SUBLAYER,
    "roberta": _SUBLAYER,
    "xlm-roberta": _SUBLAYER,
    "electra": _SUBLAYER,
    "distilbert": _on_layer("attention.out_lin", "ffn.lin2"),
    "gpt2": _on_layer("attn.c_proj", "mlp.c_proj"),
    "gptj": _on_layer("attn.out_proj", "mlp.fc_out"),
    "llama": _on_layer("self_attn.o_proj", "mlp.down_proj"),
    "mistral": _on_layer("self_attn.o_proj", "mlp.down_proj"),
    "bart": _on_layer("self_attn.out_proj", "fc2"),
    "mbart": _on_layer("self_attn.out_proj", "fc2"),
    "t5": _T5,
    "mt5": _T5,
}


def hub_module_path(model_type: str, site_path: str, kind: str) -> str:
    """The AdapterHub module path (ending in `.adapters`) for one adapterkit site."""
    rules = FAMILY_RULES.get(model_type)
    if rules is None:
        raise AdapterkitError(
            f"AdapterHub interop knows the module names of {', '.join(sorted(FAMILY_RULES))}; "
            f"model type {model_type!r} is not one of them (add it to adapterkit.interop.adapterhub_format.FAMILY_RULES)"
        )
    pattern, replacement = rules[kind]
    hub_path, n = re.subn(pattern, replacement, site_path)
    if n != 1:
        raise AdapterkitError(
            f"site {site_path} ({kind}) is not where AdapterHub puts the {kind} adapter of a {model_type} model "
            f"(expected a path matching {pattern!r}); adapters placed with custom targets cannot be exported"
        )
    return hub_path


def reduction_factor_for(hidden: int, bottleneck: int) -> float:
    """A factor r with int(hidden // r) == bottleneck (how `adapters` sizes its bottleneck)."""
    factor = hidden // bottleneck if hidden % bottleneck == 0 else hidden / (bottleneck + 0.5)
    if int(hidden // factor) != bottleneck:
        raise AdapterkitError(f"no AdapterHub reduction factor gives bottleneck {bottleneck} for hidden size {hidden}")
    return factor


def read_head(src: Path, allow_bin: bool) -> dict[str, torch.Tensor]:
    if not (src / SAFE_HEAD_FILE).is_file() and not (src / BIN_HEAD_FILE).is_file():
        return {}
    return read_weights(src / SAFE_HEAD_FILE, src / BIN_HEAD_FILE, allow_bin)


def strip_prefix(path: str, prefix: str) -> str:
    return path[len(prefix) + 1:] if prefix and path.startswith(prefix + ".") else path


def write_weights(tensors: dict[str, torch.Tensor], safe: Path, binary: Path, weights: str) -> None:
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    if weights in ("both", "safetensors"):
        atomic_write(safe, lambda tmp: save_file(tensors, tmp))
    elif safe.exists():
        safe.unlink()  # never leave a stale file of the other format behind
    if weights in ("both", "bin"):
        atomic_write(binary, lambda tmp: torch.save(tensors, tmp))  # a dict of tensors only
    elif binary.exists():
        binary.unlink()


def read_weights(safe: Path, binary: Path, allow_bin: bool) -> dict[str, torch.Tensor]:
    if safe.is_file():
        return read_safetensors(safe)
    if binary.is_file():
        if not allow_bin:
            raise AdapterkitError(
                f"{binary.parent}: has only {binary.name} (a pickle); re-save it with "
                f"`model.save_adapter(..., use_safetensors=True)` or pass allow_bin=True to read it "
                f"with torch.load(weights_only=True)"
            )
        try:
            return torch.load(binary, map_location="cpu", weights_only=True)  # tensors and containers only
        except Exception as e:
            raise AdapterkitError(f"{binary}: not a plain dict of tensors ({str(e).splitlines()[0]})") from None
    raise AdapterkitError(f"{safe.parent}: no {safe.name} or {binary.name}")


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise AdapterkitError(f"{path.parent}: not {what} (no {path.name})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AdapterkitError(f"{path}: malformed JSON ({e})") from None


def write_json(path: Path, data: dict) -> None:
    atomic_json(path, data, sort_keys=True)
