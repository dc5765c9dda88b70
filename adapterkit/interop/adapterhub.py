"""AdapterHub (`adapters` library) bottleneck adapters <-> adapterkit, exact for inference.

Nothing here imports `adapters`: both directions read and write files, so an adapter trained
with transformers 5 can be exported for an `adapters` user on transformers 4.57, and back.

Export (`convert_to_adapterhub(src, dest)` from a saved adapterkit folder, or
`export_adapterhub(model, name, dest)` from a model) writes an AdapterHub folder:
  adapter_config.json     an AdapterHub `BnConfig` (see below) plus model type, class, hidden size
  adapter.safetensors     the adapter weights under AdapterHub's module names
  pytorch_adapter.bin     the same tensors saved with `torch.save` (a dict of tensors only):
                          `model.load_adapter(path)` reads this file; `adapters` reads
                          adapter.safetensors only with `model.load_adapter(path, use_safetensors=True)`.
                          `weights="safetensors"` or `"bin"` writes just one of the two.
  head_config.json + model_head.safetensors (+ pytorch_model_head.bin)   the task head, if saved.
A module shared by several sites is written once per site (AdapterHub has no sharing); the
copies are equal, so the exported adapter computes the same function. Training the copies
in `adapters` unties them.

Placement. adapterkit computes, at every site, h + s * up(act(down(h))) on the projection's
output h, before the block's residual add and LayerNorm. In AdapterHub's bottleneck layer
that is `original_ln_before=False` (the adapter sees the projection output, not LN(h + x)),
`residual_before_ln=True` (its internal residual is h), `adapter_residual_before_ln=False`,
no extra LayerNorms, no gating, and `original_ln_after=True` (the block's residual add and
LayerNorm come after). Houlsby placement sets `mh_adapter` and `output_adapter`
(`double_seq_bn` with these flags); Pfeiffer placement only `output_adapter`. AdapterHub's
own `seq_bn` (Pfeiffer) config has `original_ln_before=True`: its adapter reads LN(h + x),
which an adapter on the projection output cannot compute, so such adapters are refused on
import with that reason. Dropout (training only) differs in place: adapterkit drops the
bottleneck activations, AdapterHub the up-projection's output; `dropout` is carried over as is.

Import (`import_adapterhub(model, src)`) loads an AdapterHub bottleneck adapter with those
flags into a model as an adapterkit adapter with `sharing="none"` (each site its own module).

Module names differ per family; `adapterhub_format.FAMILY_RULES` says, for each model type checked against
`adapters` 1.3.0, how an adapterkit site path maps to the AdapterHub module path.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import torch
from torch import nn

from adapterkit.config import BottleneckConfig
from adapterkit.errors import AdapterkitError, IncompatibleAdapterError
from adapterkit.interop.adapterhub_format import (  # noqa: F401  (FAMILY_RULES, EXACT_FLAGS: public names)
    ACTIVATIONS,
    BIN_HEAD_FILE,
    BIN_WEIGHTS_FILE,
    CONFIG_FILE,
    EXACT_FLAGS,
    FAMILY_RULES,
    FORMAT_VERSION,
    HEAD_CONFIG_FILE,
    PARAM_NAMES,
    SAFE_HEAD_FILE,
    SAFE_WEIGHTS_FILE,
    WEIGHT_FORMATS,
    hub_module_path,
    read_head,
    read_json,
    read_weights,
    reduction_factor_for,
    strip_prefix,
    write_json,
    write_weights,
)
from adapterkit.io.files import read_safetensors

# ---------------------------------------------------------------- export


def export_adapterhub(
    model: nn.Module, name: str, dest: str | os.PathLike, weights: str = "both", include_head: bool = True
) -> Path:
    """Write adapter `name` of `model` as an AdapterHub folder `dest` (see the module docstring)."""
    from adapterkit.io import save_adapter

    with tempfile.TemporaryDirectory(prefix="adapterkit-export-") as tmp:
        save_adapter(model, name, tmp, include_head=include_head)
        return convert_to_adapterhub(tmp, dest, weights=weights)


def convert_to_adapterhub(
    src: str | os.PathLike, dest: str | os.PathLike, name: str | None = None, weights: str = "both"
) -> Path:
    """Convert a saved adapterkit adapter folder `src` into an AdapterHub folder `dest`."""
    from adapterkit.io import CONFIG_FILE as AK_CONFIG
    from adapterkit.io import HEAD_FILE, WEIGHTS_FILE, read_manifest

    if weights not in WEIGHT_FORMATS:
        raise AdapterkitError(f"weights must be one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
    src, dest = Path(src), Path(dest)
    manifest = read_manifest(src)
    config = BottleneckConfig.from_dict(manifest["config"])
    _check_exportable(config, src / AK_CONFIG)
    name = name or manifest["name"]
    base = manifest["base_model"]
    tensors = read_safetensors(src / WEIGHTS_FILE)
    hub_tensors = {}
    for site in manifest["sites"]:
        prefix = f"{hub_module_path(base['model_type'], site['path'], site['kind'])}.{name}"
        for ours, theirs in PARAM_NAMES.items():
            hub_tensors[f"{prefix}.{theirs}"] = tensors[f"{site['group']}.{ours}"].clone()  # per-site copy
    hub_config = _hub_config(config, manifest, name)
    dest.mkdir(parents=True, exist_ok=True)
    write_weights(hub_tensors, dest / SAFE_WEIGHTS_FILE, dest / BIN_WEIGHTS_FILE, weights)
    head_path = src / HEAD_FILE
    if head_path.is_file():
        head = read_safetensors(head_path)
        write_weights(head, dest / SAFE_HEAD_FILE, dest / BIN_HEAD_FILE, weights)
        write_json(dest / HEAD_CONFIG_FILE, _head_config(manifest))
    else:
        for stale in (SAFE_HEAD_FILE, BIN_HEAD_FILE, HEAD_CONFIG_FILE):
            (dest / stale).unlink(missing_ok=True)
    write_json(dest / CONFIG_FILE, hub_config)
    return dest


def _check_exportable(config: BottleneckConfig, source: Path) -> None:
    if config.kind != "bottleneck":
        raise AdapterkitError(f"{source}: only bottleneck adapters can be exported to AdapterHub (kind {config.kind!r})")
    if config.train_layer_norms:
        raise AdapterkitError(
            f"{source}: the adapter trains the backbone's LayerNorms, which the AdapterHub adapter format cannot carry"
        )
    if config.activation not in ACTIVATIONS:
        raise AdapterkitError(f"{source}: activation {config.activation!r} has no AdapterHub equivalent")


def _hub_config(config: BottleneckConfig, manifest: dict, name: str) -> dict:
    base = manifest["base_model"]
    hidden = base["hidden_size"]
    bottleneck = config.bottleneck_for(hidden)
    bn = {
        **EXACT_FLAGS,
        "mh_adapter": config.placement == "houlsby",
        "output_adapter": True,
        "reduction_factor": reduction_factor_for(hidden, bottleneck),
        "non_linearity": config.activation,
        "scaling": float(config.scaling),
        "dropout": float(config.dropout),
        "init_weights": "mam_adapter" if config.init == "zero" else "houlsby",
        "leave_out": _leave_out(manifest),
    }
    return {
        "config": bn,
        "hidden_size": hidden,
        "model_class": base.get("class"),
        "model_name": base.get("name_or_path") or "",
        "model_type": base.get("model_type"),
        "name": name,
        "version": FORMAT_VERSION,
        "exported_by": f"adapterkit {manifest.get('adapterkit_version')}",
    }


def _head_config(manifest: dict) -> dict:
    base = manifest["base_model"]
    return {
        "config": None,
        "hidden_size": base["hidden_size"],
        "model_class": base.get("class"),
        "model_name": base.get("name_or_path") or "",
        "model_type": base.get("model_type"),
        "name": None,
        "version": FORMAT_VERSION,
    }


def _leave_out(manifest: dict) -> list[int]:
    """AdapterHub numbers layers across stacks (decoder layers after encoder layers)."""
    counts = manifest["base_model"]["num_layers"]
    offsets = [sum(counts[:i]) for i in range(len(counts))]
    adapted = {offsets[s["stack"]] + s["layer"] for s in manifest["sites"]}
    return [i for i in range(sum(counts)) if i not in adapted]


# ---------------------------------------------------------------- import


def read_adapterhub(src: str | os.PathLike, allow_bin: bool = False) -> tuple[dict, dict[str, torch.Tensor]]:
    """(adapter_config.json contents, weights) of an AdapterHub adapter folder.

    Weights come from adapter.safetensors. A folder with only pytorch_adapter.bin (a pickle)
    is refused unless `allow_bin=True`, which reads it with `torch.load(weights_only=True)`.
    """
    src = Path(src)
    config = read_json(src / CONFIG_FILE, "an AdapterHub adapter")
    weights = read_weights(src / SAFE_WEIGHTS_FILE, src / BIN_WEIGHTS_FILE, allow_bin)
    return config, weights


def import_adapterhub(
    model: nn.Module,
    src: str | os.PathLike,
    name: str | None = None,
    with_head: bool = True,
    allow_bin: bool = False,
    activate: bool = True,
) -> str:
    """Load an AdapterHub bottleneck adapter folder into `model`; returns the adapter's name.

    The adapter gets `sharing="none"` (one module per site). Its head, if the folder has one
    and `with_head`, is loaded into the model's head parameters of the same names.
    """
    from adapterkit.model import add_adapter, get_bank, remove_adapter

    src = Path(src)
    hub_config, tensors = read_adapterhub(src, allow_bin)
    hub_name = hub_config.get("name")
    if not hub_name:
        raise AdapterkitError(f"{src / CONFIG_FILE}: no adapter name")
    name = name or re.sub(r"\W", "_", hub_name)  # AdapterHub names may hold "-"; ours are identifiers
    config = config_from_adapterhub(hub_config, tensors, src, _stack_sizes(model))
    head = read_head(src, allow_bin) if with_head else {}
    _check_head(model, head, src)
    plan = add_adapter(model, name, config, activate=activate)
    try:
        _fill_from_hub(model, get_bank(model).adapters[name], plan, tensors, hub_name, src)
    except Exception:
        remove_adapter(model, name)
        raise
    if head:
        model.load_state_dict(head, strict=False)
    return name


def convert_from_adapterhub(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    model: str | None = None,
    name: str | None = None,
    with_head: bool = True,
    allow_bin: bool = False,
) -> Path:
    """Convert an AdapterHub adapter folder into a saved adapterkit folder `dest`.

    Sites are placed on the backbone `model` (a model folder, hub name or bare config.json;
    default: the `model_name` the AdapterHub config records), built as the config's
    `model_class` when transformers has that class, else as the bare backbone (no head).
    With a bare config.json the backbone is randomly initialised, so a head that includes
    backbone parameters (BERT's pooler) cannot be written: pass the model folder, or no head.
    """
    from adapterkit.io import save_adapter
    from adapterkit.model import head_parameters

    src = Path(src)
    hub_config = read_json(src / CONFIG_FILE, "an AdapterHub adapter")
    source = model or hub_config.get("model_name")
    if not source:
        raise AdapterkitError(f"{src}: the AdapterHub config names no base model; give one (--model)")
    has_head = with_head and ((src / SAFE_HEAD_FILE).is_file() or (src / BIN_HEAD_FILE).is_file())
    backbone, random_weights = _build_backbone(source, hub_config.get("model_class"), src if has_head else None)
    name = import_adapterhub(backbone, src, name=name, with_head=has_head, allow_bin=allow_bin)
    if has_head and random_weights:
        missing = sorted(set(head_parameters(backbone)) - set(read_head(src, allow_bin)))
        if missing:
            raise AdapterkitError(
                f"the head of {type(backbone).__name__} includes {missing[0]}, which the AdapterHub head does not "
                f"carry and a bare config cannot provide: pass the model folder, or convert without the head"
            )
    return save_adapter(backbone, name, dest, include_head=has_head)


def _build_backbone(source: str, model_class: str | None, head_src: Path | None):
    """(model, randomly initialised?) for `source`, as `model_class` if transformers has it."""
    import transformers

    from adapterkit import backbone

    config = backbone.load_config(source)
    head_config = read_json(head_src / HEAD_CONFIG_FILE, "a head") if head_src and (head_src / HEAD_CONFIG_FILE).is_file() else {}
    if head_config.get("num_labels"):
        config.num_labels = head_config["num_labels"]
    cls = getattr(transformers, model_class or "", None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        cls = transformers.AutoModel
    path = backbone.resolve_model(source)
    if Path(path).suffix == ".json":
        model = cls.from_config(config) if cls is transformers.AutoModel else cls(config)
        return model.eval(), True
    try:
        with backbone.quiet_loading():
            return cls.from_pretrained(path, config=config).eval(), False
    except OSError as e:
        raise AdapterkitError(f"could not load {source!r}: {str(e).splitlines()[0]}") from None


def config_from_adapterhub(
    hub_config: dict, tensors: dict[str, torch.Tensor], source: Path, stack_sizes: list[int]
) -> BottleneckConfig:
    """The adapterkit config that computes what this AdapterHub BnConfig computes, or a clear refusal.
    `stack_sizes`: layers per stack of the target model (AdapterHub numbers them across stacks)."""
    bn = hub_config.get("config") or {}
    if bn.get("architecture") not in (None, "bottleneck"):
        raise AdapterkitError(f"{source}: a {bn['architecture']!r} adapter, not a bottleneck adapter")
    for key, wanted in EXACT_FLAGS.items():
        value = bn.get(key, wanted)
        if value != wanted and not (key == "stochastic_depth" and not value):
            raise IncompatibleAdapterError(
                f"{source}: {key}={value!r} places or shapes the adapter in a way adapterkit cannot reproduce "
                f"(adapterkit needs {key}={wanted!r}; AdapterHub's seq_bn/Pfeiffer config reads LN(h + x), for instance)"
            )
    activation = str(bn.get("non_linearity", "")).lower()
    if "version" not in hub_config and activation == "gelu":
        activation = "gelu_new"  # legacy adapter-transformers files meant the tanh approximation
    if activation not in ACTIVATIONS:
        raise IncompatibleAdapterError(f"{source}: activation {activation!r} is not one of adapterkit's {ACTIVATIONS}")
    scaling = bn.get("scaling", 1.0)
    if not isinstance(scaling, (int, float)) or isinstance(scaling, bool):
        raise IncompatibleAdapterError(f"{source}: learned scaling {scaling!r} is not supported")
    if not bn.get("output_adapter"):
        raise IncompatibleAdapterError(f"{source}: adapters without output_adapter (feed-forward site) are not supported")
    return BottleneckConfig(
        bottleneck_dim=_bottleneck_dim(tensors, source),
        activation=activation,
        scaling=float(scaling),
        dropout=float(bn.get("dropout") or 0.0),
        placement="houlsby" if bn.get("mh_adapter") else "pfeiffer",
        sharing="none",
        leave_out=per_stack_leave_out(list(bn.get("leave_out") or []), stack_sizes, source),
    )


def _bottleneck_dim(tensors: dict[str, torch.Tensor], source: Path) -> int:
    dims = {v.shape[0] for k, v in tensors.items() if k.endswith(".adapter_down.0.weight")}
    if len(dims) != 1:
        raise IncompatibleAdapterError(
            f"{source}: adapterkit needs one bottleneck size for all sites, found {sorted(dims) or 'none'}"
        )
    return dims.pop()


def _fill_from_hub(model, modules, plan, tensors, hub_name: str, source: Path) -> None:
    model_type = getattr(model.config, "model_type", "")
    prefix = getattr(model, "base_model_prefix", "")
    by_path = {strip_prefix(k, prefix): v for k, v in tensors.items()}
    used = set()
    for gid, (site,) in plan.groups.items():
        module = strip_prefix(hub_module_path(model_type, site.path, site.kind), prefix)
        state = {}
        for ours, theirs in PARAM_NAMES.items():
            key = f"{module}.{hub_name}.{theirs}"
            if key not in by_path:
                raise IncompatibleAdapterError(f"{source}: no weights for site {site.path} (expected {key})")
            state[ours] = by_path[key]
            used.add(key)
        _load_module(modules[gid], state, site.path, source)
    extra = sorted(set(by_path) - used)
    if extra:
        raise IncompatibleAdapterError(
            f"{source}: {len(extra)} tensors have no adapterkit site in {type(model).__name__} (first: {extra[0]})"
        )


def _stack_sizes(model: nn.Module) -> list[int]:
    from adapterkit.sharing.sites import find_sites

    sizes: dict[int, int] = {}
    for site in find_sites(model):
        sizes[site.stack] = max(sizes.get(site.stack, 0), site.layer + 1)
    return [sizes[s] for s in sorted(sizes)]


def per_stack_leave_out(global_leave_out: list[int], stack_sizes: list[int], source: Path) -> list[int]:
    """AdapterHub's leave_out numbers layers across stacks; adapterkit's counts within each stack."""
    offsets = [sum(stack_sizes[:i]) for i in range(len(stack_sizes))]
    per_stack = [
        sorted(i - offset for i in global_leave_out if offset <= i < offset + size)
        for offset, size in zip(offsets, stack_sizes)
    ]
    if any(layers != per_stack[0] for layers in per_stack):
        raise IncompatibleAdapterError(
            f"{source}: leave_out {global_leave_out} leaves out different layers in the encoder and the decoder, "
            f"which one adapterkit layer selection cannot express"
        )
    return per_stack[0]


def _load_module(module: nn.Module, state: dict[str, torch.Tensor], site: str, source: Path) -> None:
    expected = module.state_dict()
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise IncompatibleAdapterError(
                f"{source}: {key} for site {site} has shape {tuple(value.shape)}, the model needs {tuple(expected[key].shape)}"
            )
    module.load_state_dict(state)


def _check_head(model: nn.Module, head: dict[str, torch.Tensor], source: Path) -> None:
    params = model.state_dict()  # keeps tied names (T5's lm_head.weight) that named_parameters drops
    for key, value in head.items():
        if key not in params:
            raise IncompatibleAdapterError(
                f"{source}: head parameter {key} does not exist in {type(model).__name__} "
                f"(an AdapterHub flex head? import with with_head=False)"
            )
        if params[key].shape != value.shape:
            raise IncompatibleAdapterError(
                f"{source}: head parameter {key} has shape {tuple(value.shape)}, the model's is {tuple(params[key].shape)}"
            )


