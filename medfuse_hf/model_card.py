"""Model cards for everything MedFuse-HF publishes, with huggingface_hub's `ModelCard` (the Hub's own format:
YAML metadata the Hub indexes, plus Markdown people read). The template is `templates/model_card.md`."""

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from . import __version__

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
TAGS = ["medfuse", "clinical", "ehr", "irregular-time-series", "medical"]


def render_model_card(
    *,
    title: str,
    summary: str,
    architecture: dict,
    data_source: str,
    data_license: str,
    cohort_sizes: dict[str, str],
    vocabulary_summary: str,
    how_to_load: str,
    metrics: dict[str, dict] | None = None,
    evaluation_context: str = "",
    dataset_name: str | None = None,
    data_citation: str | None = None,
    hub_license: str = "other",
    training_details: str = "",
) -> ModelCard:
    """A card with metadata for the Hub (metrics as `eval_results`) and the sections of the template."""
    if not TEMPLATE.exists():
        raise FileNotFoundError(f"{TEMPLATE}: model card template missing from the installation")
    eval_results = [
        EvalResult(task_type="tabular-classification", dataset_type=dataset_name or "clinical",
                   dataset_name=dataset_name or data_source, metric_type=name, metric_value=round(metric["value"], 4))
        for name, metric in (metrics or {}).items()
    ] or None
    # Weights trained on a dataset carry its licence terms (hub_license: a Hub licence id such as "cc-by-4.0").
    card_data = ModelCardData(library_name="transformers", tags=TAGS, license=hub_license, model_name=title,
                              eval_results=eval_results)
    return ModelCard.from_template(
        card_data, template_path=str(TEMPLATE), title=title, summary=summary, architecture=architecture,
        data_source=data_source, data_license=data_license, cohort_sizes=cohort_sizes,
        vocabulary_summary=vocabulary_summary, how_to_load=how_to_load.strip(), metrics=metrics,
        evaluation_context=evaluation_context, data_citation=data_citation, library_version=__version__,
        training_details=training_details,
    )


def architecture_of(config) -> dict:
    keys = ("fusion", "hidden_size", "value_embedding_size", "value_projector", "num_hidden_layers",
            "num_attention_heads", "intermediate_size", "norm_first", "time_embedding", "pooling", "vocab_size")
    return {key: getattr(config, key) for key in keys}
