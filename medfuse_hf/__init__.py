"""MedFuse-HF: multiplicative embedding fusion for irregular clinical time series, as a transformers model.

Importing this package registers MedFuse with the transformers Auto classes, so that
`AutoModelForSequenceClassification.from_pretrained(path)` and `AutoFeatureExtractor.from_pretrained(path)`
load MedFuse checkpoints.
"""

# The one place the version is written: pyproject.toml reads it, and cards and run records quote it, so a source
# checkout that was never pip-installed (no package metadata) still knows its version.
__version__ = "0.2.0"  # 0.2: the tokenizer saves its vocabulary inside preprocessor_config.json

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
)

from .configuration_medfuse import MedFuseConfig
from .feature_embeddings import (
    FeatureEmbeddingCheckpoint,
    TransferReport,
    export_feature_embeddings,
    load_feature_embeddings,
    push_feature_embeddings,
)
from .feature_vocabulary import FeatureSpec, FeatureVocabulary, ValueStatistics
from .modeling_medfuse import (
    MedFuseForPreTraining,
    MedFuseForSequenceClassification,
    MedFuseModel,
    MedFusePreTrainedModel,
)
from .privacy import privacy_guarded
from .tokenization_medfuse import MedFuseTokenizer
from .vocabulary_alignment import AlignmentReport, align, merge

AutoConfig.register(MedFuseConfig.model_type, MedFuseConfig, exist_ok=True)
AutoModel.register(MedFuseConfig, MedFuseModel, exist_ok=True)
AutoModelForSequenceClassification.register(MedFuseConfig, MedFuseForSequenceClassification, exist_ok=True)
AutoModelForPreTraining.register(MedFuseConfig, MedFuseForPreTraining, exist_ok=True)
AutoFeatureExtractor.register(MedFuseConfig, MedFuseTokenizer, exist_ok=True)
# ... and makes `save_pretrained` write `auto_map` and copy the code a checkpoint needs beside it, as custom Hub
# architectures do: a hospital that pulls a checkpoint loads it with `trust_remote_code=True`, without this package.
MedFuseConfig.register_for_auto_class()
MedFuseModel.register_for_auto_class("AutoModel")
MedFuseForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
MedFuseForPreTraining.register_for_auto_class("AutoModelForPreTraining")
MedFuseTokenizer.register_for_auto_class("AutoFeatureExtractor")

__all__ = [
    "AlignmentReport",
    "FeatureEmbeddingCheckpoint",
    "FeatureSpec",
    "FeatureVocabulary",
    "MedFuseConfig",
    "MedFuseForPreTraining",
    "MedFuseForSequenceClassification",
    "MedFuseModel",
    "MedFusePreTrainedModel",
    "MedFuseTokenizer",
    "TransferReport",
    "ValueStatistics",
    "align",
    "export_feature_embeddings",
    "load_feature_embeddings",
    "merge",
    "privacy_guarded",
    "push_feature_embeddings",
]
