"""Small fixtures built in code: a synthetic cohort, its vocabulary and tokenizer, and tiny model configs."""

import pytest
import torch

from medfuse_hf import FeatureSpec, FeatureVocabulary, MedFuseConfig, MedFuseTokenizer
from medfuse_hf.synthetic import make_sodium_cohort


@pytest.fixture(scope="session")
def cohort() -> list[dict]:
    return make_sodium_cohort(256, seed=0)


@pytest.fixture(scope="session")
def vocabulary(cohort) -> FeatureVocabulary:
    """The cohort's numeric features plus a categorical ICU type, as P12 has."""
    numeric = FeatureVocabulary.from_events(cohort, units={"sodium": "mmol/L", "heart_rate": "bpm"})
    icu_type = FeatureSpec(name="icu_type", kind="categorical", categories=["coronary", "cardiac_surgery", "medical", "surgical"])
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
