"""Feature-embedding checkpoints: what one hospital publishes so that another can start from it.

A small, self-describing folder:
- `feature_embeddings.safetensors`: per feature, keyed by canonical name, its identity embedding
  (`identity/<name>`) and MuFuse value parameters γ_f, β_f (`gamma/<name>`, `beta/<name>`); the shared value
  projector φ they modulate (`value_projector/...`); the concatenation ablation's map (`fusion_projector/...`);
  category embeddings (`category/<name>=<level>`) and the map that fuses them with the identity
  (`categorical_projector/...`).
- `feature_vocabulary.json`: the features with units, codes, aliases and value statistics, privacy-guarded.
- `embedding_config.json`: what a model needs to use them (hidden size, d′, the value projector's hidden size,
  fusion), a format version, the source's description, the privacy threshold applied, and the SHA-256 of each file.

Privacy: nothing patient-level is shared. Statistics of a numeric feature seen in fewer than `min_patients` patients
(never below 10), or more than half of whose values one patient gave, are withheld, or the feature is left out
altogether (`drop_rare_features`; categorical features carry no counts and are never rare), patient and observation
counts are coarsened to multiples of 10, and the export writes only the fields listed here: it has no way to add
anything else from the source data.
"""

import json
import logging
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import HfApi, snapshot_download
from safetensors.torch import load_file, save_file

from .feature_tables import FrozenRows
from .feature_vocabulary import UNK_ID, FeatureVocabulary, ValueStatistics
from .integrity import sha256_of
from .privacy import COUNT_GRANULARITY, DEFAULT_MIN_PATIENTS, dominance_unchecked, privacy_guarded
from .units import UnitConversion, same_unit
from .vocabulary_alignment import align

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
TENSORS_FILE = "feature_embeddings.safetensors"
VOCABULARY_FILE = "feature_vocabulary.json"
CONFIG_FILE = "embedding_config.json"
MATCH_METHODS = ("name", "code", "alias")


@dataclass
class TransferReport:
    """What `load_feature_embeddings` did, for a person to check before trusting the transfer."""

    matched: dict[str, str]  # target feature -> source feature whose embedding it received
    matched_by: dict[str, str]  # target feature -> "name" | "code" | "alias"
    new_at_target: list[str]  # target features left at their fresh initialisation
    only_at_source: list[str]  # source features with no counterpart, ignored
    # matched features whose units differ, or are known on one side only: (source unit, target unit)
    unit_mismatches: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    converted_units: dict[str, tuple[float, float]] = field(default_factory=dict)  # (scale, offset) applied
    # the source's statistics of each matched numeric feature that has them, in the target's units where a
    # conversion was declared: to normalise a target too small to fit its own, or to compare the populations
    source_statistics: dict[str, ValueStatistics] = field(default_factory=dict)
    code_conflicts: dict[str, tuple[str, str]] = field(default_factory=dict)  # matched, but coded differently
    # matched, but the values the source's γ, β and φ learnt on were normalised another way: (source, target)
    normalization_mismatches: dict[str, tuple[str, str]] = field(default_factory=dict)
    categories_transferred: int = 0  # category levels of matched categorical features, matched by their label
    frozen: bool = False

    def __str__(self) -> str:
        text = (f"{len(self.matched)} features ({self.categories_transferred} category levels) transferred, "
                f"{len(self.new_at_target)} new at the target, {len(self.only_at_source)} only at the source")
        unconverted = {name: units for name, units in self.unit_mismatches.items() if name not in self.converted_units}
        if self.converted_units:
            text += f"; units converted: {self.converted_units}"
        if unconverted:
            text += f"; unit mismatches left as they are: {unconverted}"
        if self.code_conflicts:
            text += f"; matched despite different codes: {self.code_conflicts}"
        if self.normalization_mismatches:
            text += f"; values normalised differently (source, target): {self.normalization_mismatches}"
        return text


def could_be_hub_repo_id(text: str) -> bool:
    """Whether a name that is no local folder may still be a Hub repo id (`owner/name` or `name`): not a path that
    starts at a root, here or home, has more than one `/`, or lies in a local folder (`outputs/typo`)."""
    parent = Path(text).expanduser().parent
    return not (text.startswith(("/", ".", "~")) or text.count("/") > 1 or (parent != Path(".") and parent.is_dir()))


@dataclass
class FeatureEmbeddingCheckpoint:
    """A published checkpoint as read back: tensors keyed by feature, its privacy-guarded vocabulary, its manifest.

    It is plain files (safetensors and JSON, readable without this library), not a module, so it goes to and from
    the Hub through huggingface_hub itself (`from_pretrained` here, `push_feature_embeddings`) rather than
    `PyTorchModelHubMixin`, which would tie the format to one class's constructor. Full models use transformers'
    own `push_to_hub` / `from_pretrained`."""

    tensors: dict[str, torch.Tensor]
    vocabulary: FeatureVocabulary
    config: dict

    @classmethod
    def from_pretrained(cls, path: str | Path, revision: str | None = None) -> "FeatureEmbeddingCheckpoint":
        """Read and verify a checkpoint from a local folder or a Hub repo id (downloaded with huggingface_hub's
        `snapshot_download`, or taken from its cache when `HF_HUB_OFFLINE=1`), named as transformers names it."""
        local = Path(path).expanduser()
        if not local.is_dir():
            if not could_be_hub_repo_id(str(path)):
                raise FileNotFoundError(f"{path}: no such folder (a Hub repo id reads 'owner/name')")
            try:
                local = Path(snapshot_download(str(path), revision=revision))
            except Exception as error:  # offline, unknown repo, no access: say both readings of the name
                raise FileNotFoundError(f"{path}: not a local folder, and as a Hub repo id: {error}") from error
        path = local
        config_path = path / CONFIG_FILE
        if not config_path.exists():
            raise FileNotFoundError(f"{path}: no {CONFIG_FILE}; not a MedFuse feature-embedding checkpoint")
        config = json.loads(config_path.read_text())
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{config_path}: format_version {config.get('format_version')!r}, "
                             f"expected {FORMAT_VERSION}")
        unchecked = sorted({TENSORS_FILE, VOCABULARY_FILE} - config.get("sha256", {}).keys())
        if unchecked:
            raise ValueError(f"{config_path}: no SHA-256 recorded for {', '.join(unchecked)}; "
                             "export the checkpoint again")
        for name, expected in config["sha256"].items():
            if not (path / name).exists() or sha256_of(path / name) != expected:
                raise ValueError(f"{path / name}: missing or does not match its recorded SHA-256; download it again")
        return cls(load_file(path / TENSORS_FILE), FeatureVocabulary.load(path / VOCABULARY_FILE), config)


def export_feature_embeddings(
    model, tokenizer, path: str | Path, source: str | None = None, min_patients: int = DEFAULT_MIN_PATIENTS,
    drop_rare_features: bool = False
) -> dict[str, list[str]]:
    """Write the feature-embedding checkpoint of a trained MedFuse model. Features seen in fewer than `min_patients`
    patients, or more than half of whose values one patient gave, have their statistics withheld, or with
    `drop_rare_features` are left out altogether (name, rows and all), for a site where even that a rare test was
    done is sensitive. Returns those features' names, for the caller (the checkpoint names them only when withheld,
    and counts them when dropped), and those the second rule could not be applied to (`dominance_unchecked`)."""
    base = model.base_model  # the encoder, from a head or itself
    embeddings = base.embeddings
    config = base.config
    vocabulary = tokenizer.feature_vocabulary
    if len(vocabulary) != config.vocab_size:
        raise ValueError(f"tokenizer vocabulary has {len(vocabulary)} ids, the model {config.vocab_size}")
    guarded, rare = privacy_guarded(vocabulary, min_patients, drop_rare_features)
    report = {"rare_features_dropped" if drop_rare_features else "statistics_withheld": rare,
              "dominance_unchecked": [name for name in dominance_unchecked(vocabulary) if name not in rare]}
    tensors: dict[str, torch.Tensor] = {}
    fusion = embeddings.value_fusion
    offsets = vocabulary.category_offsets()
    for feature_id, spec in enumerate(vocabulary, start=UNK_ID + 1):
        if spec.name not in guarded:
            continue
        tensors[f"identity/{spec.name}"] = embeddings.feature_embeddings.weight[feature_id]
        for name in fusion.feature_tables:  # the fusion's own per-feature rows: MuFuse's γ and β
            tensors[f"{name}/{spec.name}"] = fusion.get_parameter(name)[feature_id]
        if spec.kind == "categorical" and embeddings.categorical_fusion is not None:
            for index, level in enumerate(spec.categories):
                tensors[f"category/{spec.name}={level}"] = embeddings.categorical_fusion.category_embeddings.weight[
                    offsets[feature_id] + index
                ]
    for prefix, module in _shared_projectors(embeddings).items():
        for name, parameter in module.named_parameters():
            tensors[f"{prefix}/{name}"] = parameter
    tensors = {key: value.detach().float().cpu().contiguous().clone() for key, value in tensors.items()}

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, path / TENSORS_FILE, metadata={"format": "medfuse-feature-embeddings"})
    guarded.save(path / VOCABULARY_FILE)
    manifest = {
        "format_version": FORMAT_VERSION,
        "source": source,
        "hidden_size": config.hidden_size,
        "value_embedding_size": config.value_embedding_size,
        "value_projector_hidden_size": config.value_projector_hidden_size,
        "value_projector": config.value_projector,
        "fusion": config.fusion,
        "privacy": {"min_patients_for_statistics": min_patients, "counts_rounded_to": COUNT_GRANULARITY,
                    **({"rare_features_dropped": len(rare)} if drop_rare_features else {"statistics_withheld": rare}),
                    "dominance_unchecked": len(report["dominance_unchecked"])},
        "sha256": {name: sha256_of(path / name) for name in (TENSORS_FILE, VOCABULARY_FILE)},
    }
    (path / CONFIG_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return report


def load_feature_embeddings(
    model,
    path: str | Path,
    vocabulary: FeatureVocabulary,
    match_by: str = "name",
    freeze: bool = False,
    unit_conversions: dict[str, UnitConversion] | None = None,
    revision: str | None = None,
) -> TransferReport:
    """Copy a checkpoint's embeddings into `model` for the features of its `vocabulary` that match one at the source.

    `match_by="name"` matches canonical names only; `"code"` also codes; `"alias"` also aliases. Target features
    without a match keep their fresh initialisation. `freeze=True` keeps everything transferred (rows and shared
    maps) exactly as loaded while the target's new features train (see `FrozenRows`).
    Matched features whose units differ (or are known on one side only) are reported; `unit_conversions`, keyed by
    target feature, declares how to convert (e.g. creatinine mg/dL -> µmol/L: `88.42`; °F -> °C:
    `(5 / 9, -160 / 9)`), and the report's `source_statistics` are then in the target's units. Everything is
    checked before anything is copied, so a refused load leaves the model as it was.
    """
    if match_by not in MATCH_METHODS:
        raise ValueError(f"match_by must be one of {MATCH_METHODS}, got {match_by!r}")
    checkpoint = FeatureEmbeddingCheckpoint.from_pretrained(path, revision=revision)
    base = model.base_model  # the encoder, from a head or itself
    config, embeddings = base.config, base.embeddings
    for key in ("hidden_size", "value_embedding_size", "value_projector_hidden_size", "value_projector", "fusion"):
        recorded = checkpoint.config.get(key, "mlp")  # exports made before value_projector existed have the MLP
        if recorded != getattr(config, key):
            raise ValueError(
                f"{path}: {key} is {recorded!r} in the checkpoint but {getattr(config, key)!r} in the "
                "model; build the model with the checkpoint's settings to reuse its embeddings"
            )
    if len(vocabulary) != config.vocab_size:
        raise ValueError(f"vocabulary has {len(vocabulary)} ids, the model {config.vocab_size}")
    alignment = align(vocabulary, checkpoint.vocabulary, methods=MATCH_METHODS[: MATCH_METHODS.index(match_by) + 1])
    matched = alignment.matched
    units = _compare_units(matched, vocabulary, checkpoint.vocabulary, unit_conversions or {}, path)
    projectors = _shared_projectors(embeddings)
    shared = _shared_maps_to_copy(projectors, checkpoint.tensors, path)
    fusion = embeddings.value_fusion
    offsets = vocabulary.category_offsets()
    category_rows = []
    with torch.no_grad():
        for prefix in shared:
            for name, parameter in projectors[prefix].named_parameters():
                parameter.copy_(checkpoint.tensors[f"{prefix}/{name}"])
        for here, there in matched.items():
            feature_id = vocabulary.id_of(here)
            embeddings.feature_embeddings.weight[feature_id] = checkpoint.tensors[f"identity/{there}"]
            for name in fusion.feature_tables:
                if f"{name}/{there}" in checkpoint.tensors:
                    fusion.get_parameter(name)[feature_id] = checkpoint.tensors[f"{name}/{there}"]
            if feature_id in offsets and "categorical_projector" in shared:  # levels mean nothing without their map
                for index, level in enumerate(vocabulary.spec_of(here).categories):
                    if f"category/{there}={level}" in checkpoint.tensors:
                        row = offsets[feature_id] + index
                        embeddings.categorical_fusion.category_embeddings.weight[row] = checkpoint.tensors[
                            f"category/{there}={level}"
                        ]
                        category_rows.append(row)
    if freeze:
        feature_ids = [vocabulary.id_of(here) for here in matched]
        rows = {"feature_embeddings.weight": feature_ids,
                **{f"value_fusion.{name}": feature_ids for name in fusion.feature_tables}}
        if category_rows:
            rows["categorical_fusion.category_embeddings.weight"] = category_rows
        for name in shared:  # the maps every feature shares: all transferred
            projectors[name].requires_grad_(False)
        FrozenRows(embeddings, rows)
    report = TransferReport(
        matched=matched,
        matched_by={here: alignment.how[here] for here in matched},
        new_at_target=[spec.name for spec in vocabulary if spec.name not in matched],
        only_at_source=[spec.name for spec in checkpoint.vocabulary if spec.name not in set(matched.values())],
        categories_transferred=len(category_rows),
        frozen=freeze,
        **units,
    )
    if (report.unit_mismatches.keys() - report.converted_units.keys() or report.code_conflicts
            or report.normalization_mismatches):
        logger.warning("%s: %s", path, report)
    return report


def _compare_units(
    matched: dict[str, str], target: FeatureVocabulary, source: FeatureVocabulary,
    conversions: dict[str, UnitConversion], path,
) -> dict:
    """Unit mismatches, code conflicts, normalisations that differ and the source's statistics in target units, for
    `TransferReport`. A conversion declared for a feature that is not matched, or whose units agree, is refused: it
    would be ignored."""
    mismatches, converted, statistics, conflicts, normalizations = {}, {}, {}, {}, {}
    for here, there in matched.items():
        target_spec, source_spec = target.spec_of(here), source.spec_of(there)
        if not same_unit(source_spec.unit, target_spec.unit):
            mismatches[here] = (source_spec.unit, target_spec.unit)
        if source_spec.code and target_spec.code and source_spec.code != target_spec.code:
            conflicts[here] = (source_spec.code, target_spec.code)
        if source_spec.statistics is not None:
            statistics[here] = source_spec.statistics
            if target_spec.statistics and target_spec.statistics.normalization != source_spec.statistics.normalization:
                normalizations[here] = (source_spec.statistics.normalization, target_spec.statistics.normalization)
    for name, conversion in conversions.items():
        if name not in matched:
            raise ValueError(f"unit_conversions names {name!r}, which matched no feature of {path}")
        if name not in mismatches and target.spec_of(name).unit is not None:
            raise ValueError(f"unit_conversions names {name!r}, but its unit is {target.spec_of(name).unit!r} at the "
                             "source and the target alike: nothing to convert")
        scale, offset = (conversion, 0.0) if isinstance(conversion, numbers.Real) else conversion
        converted[name] = (float(scale), float(offset))
        if name in statistics:
            statistics[name] = statistics[name].in_other_units(scale, offset)
    return dict(unit_mismatches=mismatches, converted_units=converted, source_statistics=statistics,
                code_conflicts=conflicts, normalization_mismatches=normalizations)


def push_feature_embeddings(folder: str | Path, repo_id: str, private: bool = True, token: str | None = None) -> str:
    """Upload an exported checkpoint folder to a Hub model repo (created private unless told otherwise); returns
    the commit URL. A thin wrapper over `HfApi.create_repo` + `upload_folder`, tested against a local stand-in Hub
    that takes every file inline in the commit: LFS/Xet large-file uploads and the Hub's permission checks are not
    covered."""
    if not (Path(folder) / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{folder}: no {CONFIG_FILE}; "
                                "export the checkpoint with export_feature_embeddings first")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(folder_path=str(folder), repo_id=repo_id,
                             commit_message="Upload MedFuse feature embeddings").commit_url


def _shared_projectors(embeddings) -> dict[str, torch.nn.Module]:
    """The maps every feature shares, transferred with the per-feature rows they were trained with: the value
    projector φ that γ_f, β_f modulate, the concatenation ablation's map, and the categorical fusion's map."""
    fusion = embeddings.value_fusion
    projectors = {prefix: fusion.get_submodule(name) for prefix, name in fusion.shared_maps.items()}  # declared there
    if embeddings.categorical_fusion is not None:
        projectors["categorical_projector"] = embeddings.categorical_fusion.proj
    return projectors


def _shared_maps_to_copy(projectors: dict[str, torch.nn.Module], tensors: dict[str, torch.Tensor], path) -> list[str]:
    """Which of the model's shared maps (`_shared_projectors`) the checkpoint has. φ is required whenever the model
    has one; the others are missing from a source without categorical features or an older export, and then stay
    fresh (logged)."""
    available = []
    for prefix, module in projectors.items():
        if all(f"{prefix}/{name}" in tensors for name, _ in module.named_parameters()):
            available.append(prefix)
        elif prefix == "value_projector":
            raise ValueError(f"{path}: the checkpoint has no value projector φ, which its γ_f, β_f modulate")
        else:
            logger.warning("%s: no %s in the checkpoint; it stays freshly initialised", path, prefix)
    return available


__all__ = [
    "FeatureEmbeddingCheckpoint",
    "TransferReport",
    "export_feature_embeddings",
    "load_feature_embeddings",
    "push_feature_embeddings",
]
