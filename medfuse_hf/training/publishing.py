"""What a finished run publishes beside its model: a model card, and a privacy-guarded feature-embedding
checkpoint with its own card, ready for `push_to_hub` or for another hospital's `load_feature_embeddings`."""

from pathlib import Path

from ..data.clinical_features import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from ..feature_embeddings import export_feature_embeddings
from ..model_card import architecture_of, render_model_card
from ..tokenization_medfuse import MedFuseTokenizer
from .cohorts import Cohort

MODEL_USAGE = """
import medfuse_hf  # registers MedFuse with the Auto classes
from transformers import AutoFeatureExtractor, {auto_class}

model = {auto_class}.from_pretrained("{where}")
tokenizer = AutoFeatureExtractor.from_pretrained("{where}")
patients = [{{"feature": ["heart_rate", "sodium"], "value": [92, 131], "time": [0.5, 3.0]}}]
outputs = model(**tokenizer(patients, return_tensors="pt"))
"""
EMBEDDING_USAGE = """
from medfuse_hf import MedFuseConfig, MedFuseForSequenceClassification, MedFuseTokenizer

# Your vocabulary and tokenizer; the model with this checkpoint's hidden_size, value_embedding_size and fusion.
model = MedFuseForSequenceClassification(MedFuseConfig(**vocabulary.config_kwargs(), hidden_size={hidden_size},
                                         value_embedding_size={value_embedding_size}, fusion="{fusion}", num_labels=2))
report = model.medfuse.load_feature_embeddings("{where}", vocabulary, match_by="alias")
print(report)  # matched features, features new at your hospital, features only at the source
"""


def publish_run(
    output_dir: Path,
    model,
    tokenizer: MedFuseTokenizer,
    cohort: Cohort,
    title: str,
    metrics: dict | None = None,
    evaluation_context: str = "",
    min_patients: int = 20,
) -> None:
    output_dir = Path(output_dir)
    config = model.config
    vocabulary = tokenizer.feature_vocabulary
    catalogued = sum(spec.name in NUMERIC_FEATURES or spec.name in CATEGORICAL_FEATURES for spec in vocabulary)
    common = dict(
        architecture=architecture_of(config), data_source=cohort.description, data_license=cohort.license,
        cohort_sizes={f"{name} patients": f"{len(part):,}" for name, part in cohort.splits.items()},
        vocabulary_summary=f"{len(vocabulary) - 2} features, {catalogued} of them in the canonical clinical catalogue",
        data_citation=cohort.citation, hub_license=cohort.hub_license,
    )
    auto_class = "AutoModelForSequenceClassification" if config.architectures == ["MedFuseForSequenceClassification"] else "AutoModelForPreTraining"
    render_model_card(
        title=title, summary=f"MedFuse trained on {cohort.description} (label: `{cohort.label_column}`).",
        how_to_load=MODEL_USAGE.format(auto_class=auto_class, where=output_dir / "model"), metrics=metrics,
        evaluation_context=evaluation_context, **common,
    ).save(output_dir / "model" / "README.md")

    embeddings_dir = output_dir / "feature_embeddings"
    withheld = export_feature_embeddings(model, tokenizer, embeddings_dir, source=cohort.description, min_patients=min_patients)
    render_model_card(
        title=f"{title}: feature embeddings",
        summary=(f"Feature-identity embeddings and MuFuse value parameters (γ_f, β_f, φ) learned on {cohort.description}, "
                 f"keyed by canonical feature name, for reuse at another hospital. No patient-level data: value "
                 f"statistics of features seen in fewer than {min_patients} patients are withheld "
                 f"({', '.join(withheld['statistics_withheld']) or 'none here'}) and counts are rounded to tens."),
        how_to_load=EMBEDDING_USAGE.format(where=embeddings_dir, hidden_size=config.hidden_size,
                                           value_embedding_size=config.value_embedding_size, fusion=config.fusion),
        **common,
    ).save(embeddings_dir / "README.md")
