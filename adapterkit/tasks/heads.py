"""Build the model a task spec needs, and read the spec back from a saved adapter."""
from __future__ import annotations

from pathlib import Path

from adapterkit.tasks.registry import get_task_type
from adapterkit.tasks.spec import TaskSpec


def model_for(spec: TaskSpec, model_name: str | None):
    """A backbone with the head `spec` describes (fresh head weights, label names in id2label)."""
    from adapterkit import backbone

    kind = get_task_type(spec.type)
    return backbone.load_model(model_name, num_labels=spec.num_labels, problem_type=getattr(kind, "problem_type", None),
                               head=kind.head, labels=spec.labels)


def saved_spec(folder: str | Path) -> TaskSpec | None:
    """The TaskSpec stored with an adapter (None for adapters saved before task types)."""
    from adapterkit.io import read_manifest

    data = read_manifest(folder).get("task")
    return TaskSpec.from_dict(data) if data else None


def run_spec(folder: Path, run: dict) -> TaskSpec:
    """The head metadata of a run or adapter folder: the adapter's manifest, else the run's
    config (full fine-tuning), else the GLUE preset of runs saved before task types."""
    from adapterkit.errors import AdapterkitError
    from adapterkit.io import CONFIG_FILE
    from adapterkit.tasks.presets import glue_spec

    spec = saved_spec(folder) if (folder / CONFIG_FILE).exists() else None
    if spec is None and run.get("task_spec"):
        spec = TaskSpec.from_dict(run["task_spec"])
    if spec is None and run.get("task"):
        spec = glue_spec(run["task"])
    if spec is None:
        raise AdapterkitError(f"{folder}: no task metadata (not an adapterkit run or adapter folder)")
    return spec


def load_for_inference(folder: str | Path, precision: str | None = None, note=print, drop_layers: int | None = None):
    """(model, tokenizer, spec, run_config) from an `adapterkit train` output folder or an adapter
    folder: the backbone, the head the spec describes, the adapter, in eval mode. The run's
    precision (or `precision`) is resolved as `adapterkit.evaluation.load_run` does: run the
    forward under `adapterkit.precision.run_autocast(run_config)`. AdapterDrop: `drop_layers`
    when given, else the run's own k, as the run's dev scores were computed
    (`adapterkit.compose.drop.drop_for_run`)."""
    from adapterkit import backbone
    from adapterkit.compose.drop import drop_for_run
    from adapterkit.errors import AdapterkitError
    from adapterkit.evaluation import _apply_precision
    from adapterkit.io import load_adapter, read_manifest
    from adapterkit.io.files import read_json

    folder = Path(folder)
    if not folder.is_dir():
        raise AdapterkitError(f"{folder}: no such folder")
    run_file = folder / "run_config.json"
    run = read_json(run_file, "run config", dict) if run_file.exists() else {}
    spec = run_spec(folder, run)
    full = run.get("full_finetune", False)
    source = str(folder / "model") if full else run.get("model") or read_manifest(folder)["base_model"]["name_or_path"]
    tokenizer_dir = folder / "tokenizer"
    tokenizer = backbone.load_tokenizer(str(tokenizer_dir) if tokenizer_dir.is_dir() else source)
    model = model_for(spec, source)
    backbone.set_attention(model, run.get("attention"), run.get("rsa"))
    name = None if full else load_adapter(model, folder)
    drop_for_run(model, run, drop_layers)
    _apply_precision(model, run, precision, name, note)
    model.eval()
    return model, tokenizer, spec, run
