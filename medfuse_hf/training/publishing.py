"""What a finished run publishes beside its model: a model card, and a privacy-guarded feature-embedding
checkpoint with its own card, ready for `push_to_hub` or for another hospital's `load_feature_embeddings`."""

from collections.abc import Mapping
from pathlib import Path

import datasets
from huggingface_hub import HfApi

from ..data.clinical_features import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from ..feature_embeddings import VOCABULARY_FILE, export_feature_embeddings, push_feature_embeddings
from ..feature_vocabulary import FeatureVocabulary
from ..model_card import architecture_of, render_model_card
from ..privacy import publishable_vocabulary, without_exact_prevalence
from ..tokenization_medfuse import MedFuseTokenizer
from .cohorts import Cohort

MODEL_USAGE = """
from transformers import AutoFeatureExtractor, {auto_class}

# With `pip install medfuse-hf`: `import medfuse_hf` registers MedFuse with the Auto classes.
# Without it, the checkpoint's own code (shipped beside the weights) is used: pass trust_remote_code=True.
model = {auto_class}.from_pretrained("{where}", trust_remote_code=True)
tokenizer = AutoFeatureExtractor.from_pretrained("{where}", trust_remote_code=True)
patients = [{{"feature": ["heart_rate", "sodium"], "value": [92, 131], "time": [0.5, 3.0]}}]
outputs = model(**tokenizer(patients, return_tensors="pt"))
"""
EMBEDDING_USAGE = """
from medfuse_hf import MedFuseConfig, MedFuseForSequenceClassification, load_feature_embeddings

# Your vocabulary and tokenizer; the model with this checkpoint's sizes and fusion.
model = MedFuseForSequenceClassification(MedFuseConfig(
    **vocabulary.config_kwargs(), hidden_size={hidden_size}, value_embedding_size={value_embedding_size},
    value_projector_hidden_size={value_projector_hidden_size}, fusion="{fusion}", num_labels=2))
report = load_feature_embeddings(model.medfuse, "{where}", vocabulary, match_by="alias")
print(report)  # matched features, features new at your hospital, features only at the source
"""


def privacy_statement(guarded: dict[str, list[str]], min_patients: int) -> str:
    """What the feature-embedding export (`guarded`: its report) withheld or left out, for the card: the dominance
    rule is claimed only for the features it could be applied to."""
    rules = f"features seen in fewer than {min_patients} patients, or more than half of whose values one patient gave,"
    if "rare_features_dropped" in guarded:
        statement = f"{rules} are left out altogether ({len(guarded['rare_features_dropped'])} here)"
    else:
        withheld = ", ".join(guarded["statistics_withheld"]) or "none here"
        statement = f"value statistics of {rules} are withheld ({withheld})"
    if unchecked := guarded["dominance_unchecked"]:
        features = f"{len(unchecked)} feature{'s' if len(unchecked) > 1 else ''}"
        statement += (f"; the second rule could not be applied to {features}, whose statistics do not record the "
                      "largest patient's share")
    return statement


def publish_run(
    output_dir: Path,
    model,
    tokenizer: MedFuseTokenizer,
    cohort: Cohort,
    title: str,
    metrics: dict | None = None,
    evaluation_context: str = "",
    min_patients: int = 20,
    hub_repo_id: str | None = None,
    summary: str | None = None,
    drop_rare_features: bool = False,
    training_details: str = "",
    splits: Mapping[str, datasets.Dataset] | None = None,
) -> None:
    """Write `<output_dir>/model/README.md` and the feature-embedding checkpoint with its card. The cards' loading
    code names `hub_repo_id` (embeddings: `<hub_repo_id>-embeddings`) when the run is to be pushed, else the folders
    as a reader reproducing the run would name them. `summary` says what the model learned (default: the cohort's
    label, as fine-tuning learns it); `training_details`, Markdown, is the model card's pretraining section.
    `splits`, the patients the run trained, validated and was tested on (`training_splits`), size the card's cohort;
    by default the cohort's splits whole."""
    output_dir = Path(output_dir)
    config = model.config
    common = dict(
        architecture=architecture_of(config), data_source=cohort.description, data_license=cohort.license,
        cohort_sizes={f"{name} patients": f"{len(part):,}" for name, part in (splits or cohort.splits).items()},
        data_citation=cohort.citation, hub_license=cohort.hub_license,
    )
    auto_class = ("AutoModelForSequenceClassification" if config.architectures == ["MedFuseForSequenceClassification"]
                  else "AutoModelForPreTraining")
    render_model_card(
        title=title, summary=summary or f"MedFuse trained on {cohort.description} to predict "
                                           f"{cohort.task or 'its label'} (label column: `{cohort.label_column}`).",
        how_to_load=MODEL_USAGE.format(auto_class=auto_class, where=hub_repo_id or readable(output_dir / "model")),
        metrics=metrics,
        evaluation_context=evaluation_context, vocabulary_summary=summarise_vocabulary(tokenizer.feature_vocabulary),
        training_details=training_details, **common,
    ).save(output_dir / "model" / "README.md")

    embeddings_dir = output_dir / "feature_embeddings"
    guarded = export_feature_embeddings(model, tokenizer, embeddings_dir, source=cohort.description,
                                        min_patients=min_patients, drop_rare_features=drop_rare_features)
    render_model_card(
        title=f"{title}: feature embeddings",
        summary=(f"Feature-identity embeddings and MuFuse value parameters (γ_f, β_f, φ) learned on "
                 f"{cohort.description}, keyed by canonical feature name, for reuse at another hospital. No "
                 f"patient-level data: {privacy_statement(guarded, min_patients)}, and counts are rounded to tens."),
        how_to_load=EMBEDDING_USAGE.format(
            where=embeddings_repo_id(hub_repo_id) if hub_repo_id else readable(embeddings_dir),
            hidden_size=config.hidden_size,
            value_embedding_size=config.value_embedding_size,
            value_projector_hidden_size=config.value_projector_hidden_size, fusion=config.fusion),
        # as published
        vocabulary_summary=summarise_vocabulary(FeatureVocabulary.load(embeddings_dir / VOCABULARY_FILE)),
        **common,
    ).save(embeddings_dir / "README.md")


def summarise_vocabulary(vocabulary: FeatureVocabulary) -> str:
    catalogued = sum(spec.name in NUMERIC_FEATURES or spec.name in CATEGORICAL_FEATURES for spec in vocabulary)
    return f"{len(vocabulary) - 2} features, {catalogued} of them in the canonical clinical catalogue"


def embeddings_repo_id(model_repo_id: str) -> str:
    return f"{model_repo_id}-embeddings"


def readable(path: Path) -> str:
    """A path as the card's reader can use it, without this machine's folders: relative to the working directory
    when inside it, else the run folder's own name and what is in it (`run/model`), as a reader who downloaded the
    run would find it. A card is published; `/home/<user>/<project>/...` would go with it."""
    path = Path(path).absolute()
    return str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else Path(*path.parts[-2:]))


def push_run(output_dir: Path, model, tokenizer: MedFuseTokenizer, repo_id: str, token: str | None = None,
             min_patients: int = 20, *, train_patients: int | None) -> str:
    """Publish a finished run to private Hub repos: model and tokenizer through transformers' own `push_to_hub`, then
    the run's model card over the stub card transformers writes, then the feature embeddings to
    `<repo_id>-embeddings`. Returns the embeddings' commit URL.

    The tokenizer leaves under the same privacy guard as the embeddings (`publishable_vocabulary`), checked before
    any upload; the model without its exact prevalence (`without_exact_prevalence`: `train_patients`, the patients
    a fine-tuning run trained on; None for a pretrained base)."""
    output_dir = Path(output_dir)
    publishable_vocabulary(tokenizer.feature_vocabulary, repo_id, min_patients)  # refused before any upload
    with without_exact_prevalence(model, train_patients):
        model.push_to_hub(repo_id, private=True, token=token)
    tokenizer.push_to_hub(repo_id, private=True, token=token, min_patients_for_statistics=min_patients)
    HfApi(token=token).upload_file(path_or_fileobj=output_dir / "model" / "README.md", path_in_repo="README.md",
                                   repo_id=repo_id, commit_message="Model card")  # the Hub checks its metadata
    return push_feature_embeddings(output_dir / "feature_embeddings", embeddings_repo_id(repo_id), token=token)
