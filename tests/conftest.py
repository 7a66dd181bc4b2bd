"""Small fixtures built in code: a synthetic cohort, its vocabulary and tokenizer, tiny model configs, and an
exported feature-embedding checkpoint."""

import importlib.util
import os
import platform
import runpy
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import get_args

import pytest
import torch
from packaging.requirements import Requirement

from medfuse_hf import (
    FeatureSpec,
    FeatureVocabulary,
    MedFuseConfig,
    MedFuseForSequenceClassification,
    MedFuseTokenizer,
    export_feature_embeddings,
)
from medfuse_hf.synthetic import make_sodium_cohort

ROOT = Path(__file__).resolve().parents[1]

SUBPROCESS_SITE = ROOT / "tests" / "subprocess_site"


def pytest_terminal_summary(terminalreporter) -> None:
    """The releases this run tested, at the end of its log: CI installs the newest, so the log says which passed."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    tested = ", ".join(f"{Requirement(text).name} {version(Requirement(text).name)}" for text in dependencies)
    terminalreporter.write_line(f"stack tested: Python {platform.python_version()}, {tested}")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config) -> int | None:
    """`--numprocesses auto` (pyproject.toml's addopts): a worker per core this process may use, at most four. Most
    of the suite's time is recipes run as one-thread subprocesses, so a second core halves it; past four, each
    worker's own torch (about a GB) costs more than sharing out the few long tests left saves."""
    if "PYTEST_XDIST_AUTO_NUM_WORKERS" in os.environ:
        return None  # xdist's own setting: it reads it
    return min(4, usable_cores())


def usable_cores() -> int:
    """The cores this process may run on (a CPU quota or `taskset` may leave fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pytest_configure(config) -> None:
    """Each xdist worker's torch gets its share of the cores. By default every worker's torch runs a thread per core,
    so two workers on two cores run four, and each parallel region waits for a thread the other worker holds (beside
    a two-thread training, a step of the tiny model took 0.76 s with two threads and 12 ms with one)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, usable_cores() // workers))


def load_script(relative_path: str) -> ModuleType:
    """A recipe or benchmark script (not a package module) imported by path, to test its functions. Its folder is
    put on `sys.path`, as running it would, so that it can import its sibling scripts."""
    folder = str((ROOT / relative_path).parent)
    if folder not in sys.path:
        sys.path.append(folder)
    spec = importlib.util.spec_from_file_location(Path(relative_path).stem, ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session", autouse=True)
def short_sleeps_where_a_stream_ends():
    """Every process a test starts, and this one, runs `subprocess_site/sitecustomize.py` (see why there). Set per
    session, not at import, so that pytest's own worker processes do not import `datasets` before their plugins."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (str(SUBPROCESS_SITE), os.environ.get("PYTHONPATH")))))
        runpy.run_path(str(SUBPROCESS_SITE / "sitecustomize.py"))
        yield


@pytest.fixture(params=get_args(MedFuseConfig.__annotations__["fusion"]))
def fusion(request) -> str:
    """Every fusion the config accepts (MuFuse and the paper's ablations): a test that takes `fusion` runs for each."""
    return request.param


@pytest.fixture(params=get_args(MedFuseConfig.__annotations__["pooling"]))
def pooling(request) -> str:
    """Every pooling the config accepts."""
    return request.param


@pytest.fixture(scope="session")
def cohort() -> list[dict]:
    return make_sodium_cohort(256, seed=0)


@pytest.fixture(scope="session")
def vocabulary(cohort) -> FeatureVocabulary:
    """The cohort's numeric features plus a categorical ICU type, as P12 has."""
    numeric = FeatureVocabulary.from_events(cohort, units={"sodium": "mmol/L", "heart_rate": "bpm"})
    icu_type = FeatureSpec(name="icu_type", kind="categorical",
                           categories=["coronary", "cardiac_surgery", "medical", "surgical"])
    return FeatureVocabulary([*numeric, icu_type])


@pytest.fixture(scope="session")
def tokenizer(vocabulary) -> MedFuseTokenizer:
    return MedFuseTokenizer(vocabulary, max_events=64)


@pytest.fixture
def tiny_config(vocabulary):
    """A factory of small configs so tests run in milliseconds; dropout off so eval/train agree."""

    def make(**overrides) -> MedFuseConfig:
        settings = dict(
            **vocabulary.config_kwargs(),
            num_labels=2,
            hidden_size=32,
            value_embedding_size=8,
            intermediate_size=64,
            num_attention_heads=2,
            num_hidden_layers=2,
            hidden_dropout_prob=0.0,
            classifier_dropout=0.0,
        )
        return MedFuseConfig(**{**settings, **overrides})

    torch.manual_seed(0)
    return make


@pytest.fixture
def source(tmp_path, cohort):
    """A model as if trained, its vocabulary, and the feature-embedding checkpoint exported from it."""
    vocabulary = FeatureVocabulary.from_events(cohort, units={"creatinine": "mg/dL", "sodium": "mmol/L"})
    model = MedFuseForSequenceClassification(
        MedFuseConfig(**vocabulary.config_kwargs(), num_labels=2, hidden_size=32, value_embedding_size=8)
    )
    with torch.no_grad():  # as if trained: γ, β away from their initial 1 and 0
        model.medfuse.embeddings.value_fusion.gamma.normal_()
        model.medfuse.embeddings.value_fusion.beta.normal_()
    path = tmp_path / "source-embeddings"
    export_feature_embeddings(model, MedFuseTokenizer(vocabulary), path, source="synthetic test cohort",
                              min_patients=20)
    return model, vocabulary, path
