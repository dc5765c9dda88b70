"""Turn an adapter reference into resident weights on the engine's model: its bottleneck modules in
the model's bank (adapterkit.io.load_adapter, head left alone) and a head module of its own.

References:
  FOLDER                  an adapter folder (`adapterkit train` output or `save_adapter`)
  hub:REPO[:TAG|@VER]     pulled from the hub (a folder hub or a hub server, see `hub`)
  BUNDLE#TASK             an adapter branch of an `adapterkit multitask` bundle folder
The head's task (type and label names) comes from the adapter's saved TaskSpec, else its run's
GLUE task, else its width (1 output: regression; else labels "0".."C-1").
"""
from __future__ import annotations

from pathlib import Path

from adapterkit.serve.errors import AdapterLoadError

TASK_TYPES = ("classification", "regression")


def load_into(model, name: str, ref: str, hub: str | None = None):
    """(head module, task dict, bytes of adapter + head weights) after loading `ref` as `name`."""
    if "#" in ref and not ref.startswith("hub:"):
        return _load_bundle_branch(model, name, *ref.rsplit("#", 1))
    from adapterkit.io import HEAD_FILE, load_adapter, read_manifest
    from adapterkit.io.files import read_safetensors
    from adapterkit.routing import build_head, head_size

    folder = _resolve(ref, hub)
    manifest = read_manifest(folder)
    head_path = folder / HEAD_FILE
    if not head_path.is_file():
        raise AdapterLoadError(f"adapter {name!r} ({ref}) has no head ({HEAD_FILE}): nothing to predict with")
    tensors = read_safetensors(head_path)
    declared = manifest.get("head")
    if isinstance(declared, list):
        tensors = {k: v for k, v in tensors.items() if k in declared}
    head = build_head(model, tensors)
    run = _run_config(folder)
    task = _task(manifest, run, head_size(head), ref)
    k = _run_drop(model, run, ref)
    load_adapter(model, folder, name=name, activate=False, head=False)
    if k:
        from adapterkit.model import get_bank

        get_bank(model).row_drop[name] = k
    return head, task, _bytes(model, name, head)


def _run_config(folder: Path) -> dict:
    """The parts of a run folder's run_config.json the server uses ({} for a folder without one)."""
    run_file = folder / "run_config.json"
    if not run_file.is_file():
        return {}
    from adapterkit.io.files import read_json

    return read_json(run_file, "a run config",
                     schema={"task?": (str, None), "drop_layers?": int, "drop_robust?": bool})


def _run_drop(model, run: dict, ref: str) -> int:
    """The AdapterDrop k a run was trained (and is scored by `eval`) with: its --drop-layers, 0
    after robust training (adapterkit.compose.drop.drop_for_run's rule) or without a run config."""
    from adapterkit.compose.drop import check_drop_layers

    k = 0 if run.get("drop_robust") else run.get("drop_layers", 0)
    return check_drop_layers(model, k, f"{ref}: the run's drop_layers") if k else 0  # engine: 422


def _resolve(ref: str, hub: str | None) -> Path:
    if ref.startswith("hub:"):
        from adapterkit.hub import pull_adapter

        return Path(pull_adapter(ref[len("hub:"):], hub=hub))
    folder = Path(ref)
    if not folder.is_dir():
        raise AdapterLoadError(f"{ref}: no such adapter folder")
    return folder


def _task(manifest: dict, run: dict, width: int, ref: str) -> dict:
    spec = manifest.get("task")
    if isinstance(spec, dict) and spec.get("type"):
        kind, labels = spec["type"], spec.get("labels")
        if spec.get("preset"):  # a GLUE run: its task's label names, as `predict` writes them
            kind, labels = _glue_task(spec["preset"])
    else:
        glue = run.get("task")
        kind, labels = _glue_task(glue) if glue else ("regression" if width == 1 else "classification", None)
    if kind not in TASK_TYPES:
        raise AdapterLoadError(f"{ref}: a {kind} adapter; the server predicts with classification and regression heads")
    if kind == "classification":
        labels = list(labels or (str(i) for i in range(width)))
        if len(labels) != width:
            raise AdapterLoadError(f"{ref}: {len(labels)} label names for a head with {width} outputs")
        return {"type": kind, "labels": labels}
    return {"type": kind, "labels": None}


def _glue_task(name: str) -> tuple[str, list[str] | None]:
    from adapterkit.data import get_task

    task = get_task(name)  # label names where the task has them (CoLA: unacceptable/acceptable), as `predict` writes
    return ("regression", None) if task.is_regression else ("classification", list(task.display_labels))


def _bytes(model, name: str, head) -> int:
    from adapterkit.model import get_bank

    params = [*get_bank(model).adapters[name].parameters(), *head.parameters()]
    return sum(p.numel() * p.element_size() for p in params)


def _load_bundle_branch(model, name: str, bundle: str, task_name: str):
    """An adapter branch of a multi-task bundle, rebuilt on the engine's backbone: same layer set and
    sharing, site discovery of the backbone instead of the bundle's trunk paths."""
    from adapterkit.config import BottleneckConfig
    from adapterkit.io.files import read_safetensors
    from adapterkit.model import add_adapter, get_bank, remove_adapter
    from adapterkit.multitask.io import head_tensors_by_model_key, read_manifest
    from adapterkit.routing import build_head, head_size

    folder = Path(bundle)
    manifest = read_manifest(folder)
    entry = manifest["branches"].get(task_name)
    if entry is None:
        raise AdapterLoadError(f"{bundle}: no task {task_name!r} (tasks: {', '.join(manifest['branches'])})")
    if entry["kind"] != "adapter":
        raise AdapterLoadError(f"{bundle}#{task_name}: a '{entry['kind']}' branch (its own layers) is not an adapter; "
                               f"serve it with `adapterkit multitask predict`")
    hidden = manifest["config"].get("hidden_size")
    if hidden != getattr(model.config, "hidden_size", None):
        raise AdapterLoadError(f"{bundle}#{task_name}: built for hidden size {hidden}, the backbone has "
                               f"{getattr(model.config, 'hidden_size', None)}")
    config = BottleneckConfig.from_dict({**entry["info"]["adapter"], "targets": None})
    tensors = read_safetensors(folder / entry["file"])
    head = build_head(model, head_tensors_by_model_key(manifest, tensors, model.base_model_prefix))
    add_adapter(model, name, config, activate=False)
    try:
        modules = get_bank(model).adapters[name]
        state = {k[len("adapter."):]: v for k, v in tensors.items() if k.startswith("adapter.")}
        modules.load_state_dict(state, strict=True)
    except Exception as e:
        remove_adapter(model, name)
        raise AdapterLoadError(f"{bundle}#{task_name}: adapter weights do not fit the backbone ({e})") from None
    labels = (entry.get("info") or {}).get("task")
    kind, names = _glue_task(labels) if labels else (("regression", None) if head_size(head) == 1 else ("classification", None))
    if kind == "classification":
        names = list(names or (str(i) for i in range(head_size(head))))
    return head, {"type": kind, "labels": names}, _bytes(model, name, head)
