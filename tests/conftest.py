import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# Tests write only under temporary folders: the per-user cache, the default hub and the datasets
# cache live in a folder of this session (never ~/.cache), removed at the end.
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="adapterkit-tests-"))
os.environ["ADAPTERKIT_CACHE"] = str(_SESSION_TMP / "cache")
# `datasets` caches the user files it parses (CSV, JSONL, ...) under ~/.cache/huggingface/datasets
os.environ["HF_DATASETS_CACHE"] = str(_SESSION_TMP / "hf-datasets")
os.environ.pop("ADAPTERKIT_HUB", None)
try:  # hypothesis keeps its example database and constants under the session folder, not ./.hypothesis
    from hypothesis import configuration as _hypothesis_configuration

    _hypothesis_configuration.set_hypothesis_home_dir(_SESSION_TMP / "hypothesis")
except ImportError:
    pass
os.environ.pop("ADAPTERKIT_HUB_TOKEN", None)
REPO_ROOT = Path(__file__).resolve().parents[1]
_LEFTOVER_IGNORED = {".pytest_cache", "__pycache__", ".benchmarks"}


def _repo_files() -> set[str]:
    """Every path in the checkout except git's, caches and compiled kernels (built in place)."""
    out = set()
    for path in REPO_ROOT.rglob("*"):
        rel = path.relative_to(REPO_ROOT)
        if rel.parts[0] == ".git" or _LEFTOVER_IGNORED & set(rel.parts) or path.suffix == ".so":
            continue
        out.add(rel.as_posix())
    return out


def _home_files() -> set[str]:
    """What tests could leave in the home folder: its entries and ~/.cache's, and everything in
    ~/.cache/adapterkit except the compiled-kernel cache (a deliberate per-user build cache)."""
    home = Path.home()
    out = set()
    for folder in (home, home / ".cache"):
        if folder.is_dir():
            out |= {f"~/{p.relative_to(home).as_posix()}" for p in folder.iterdir()}
    ours = home / ".cache" / "adapterkit"
    if ours.is_dir():
        out |= {f"~/{p.relative_to(home).as_posix()}" for p in ours.rglob("*") if p.relative_to(ours).parts[0] != "kernels"}
    return out


def pytest_sessionstart(session):
    session.config._adapterkit_before = _repo_files()
    session.config._adapterkit_home_before = _home_files()


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if tests left files in the checkout or the home folder (the user's cache is
    never used: see above)."""
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)
    before = getattr(session.config, "_adapterkit_before", None)
    if before is None or hasattr(session.config, "workerinput"):
        return
    for where, new in (("the checkout", sorted(_repo_files() - before)),
                       ("the home folder", sorted(_home_files() - session.config._adapterkit_home_before))):
        if new:
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter:
                reporter.write_line(f"tests left files in {where}: {', '.join(new[:10])}", red=True)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _pass_the_data_path() -> None:
    """The library never looks next to the checkout: tests hand it the real data (also to the
    processes they start) through its documented environment variables."""
    from tests.glue_fixtures import SHARED_DATA

    for var, sub in (("ADAPTERKIT_DATA_DIR", "glue"), ("ADAPTERKIT_AMAZON_DIR", "amazon")):
        if (SHARED_DATA / sub).is_dir():
            os.environ.setdefault(var, str(SHARED_DATA / sub))


_pass_the_data_path()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A 2-layer, width-32 BERT with the real all-MiniLM-L6-v2 tokenizer, saved as a model folder."""
    from tests.tiny_models import write_tiny_bert

    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def glue_dir(tmp_path_factory):
    from tests.glue_fixtures import write_glue_fixture

    return write_glue_fixture(tmp_path_factory.mktemp("glue"))
