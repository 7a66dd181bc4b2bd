"""Feature-embedding checkpoints: what one hospital publishes so that another can start from it.

A small, self-describing folder:
- `feature_embeddings.safetensors`: per feature, keyed by canonical name, its identity embedding
  (`identity/<name>`) and MuFuse value parameters γ_f, β_f (`gamma/<name>`, `beta/<name>`); the shared value
  projector φ they modulate (`value_projector/...`); the concatenation ablation's map (`fusion_projector/...`);
  category embeddings (`category/<name>=<level>`) and the map that fuses them with the identity
  (`categorical_projector/...`).
- `feature_vocabulary.json`: the features with units, codes, aliases and value statistics, privacy-guarded.
- `embedding_config.json`: what a model needs to use them (hidden size, d′, fusion), a format version, the
  source's description, the privacy threshold applied, and the SHA-256 of each file.

Privacy: nothing patient-level is shared. Statistics of a feature seen in fewer than `min_patients` patients are
withheld, patient and observation counts are coarsened to multiples of 10, and the export writes only the fields
listed here: it has no way to add anything else from the source data.
"""

import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from huggingface_hub import HfApi, snapshot_download
from safetensors.torch import load_file, save_file

from .feature_vocabulary import UNK_ID, FeatureVocabulary
from .integrity import sha256_of

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
TENSORS_FILE = "feature_embeddings.safetensors"
VOCABULARY_FILE = "feature_vocabulary.json"
CONFIG_FILE = "embedding_config.json"
COUNT_GRANULARITY = 10
# Statistics of fewer patients than this are never shared, whatever threshold is asked for: the common small-cell
# rule of disclosure control, and the granularity counts are rounded to.
MIN_PATIENTS_FLOOR = 10
MATCH_METHODS = ("name", "code", "alias")


@dataclass
class TransferReport:
    """What `load_feature_embeddings` did, for a person to check before trusting the transfer."""

    matched: dict[str, str]  # target feature -> source feature whose embedding it received
    matched_by: dict[str, str]  # target feature -> "name" | "code" | "alias"
    new_at_target: list[str]  # target features left at their fresh initialisation
    only_at_source: list[str]  # source features with no counterpart, ignored
    unit_mismatches: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    converted_units: dict[str, float] = field(default_factory=dict)
    categories_transferred: int = 0  # category levels of matched categorical features, matched by their label
    frozen: bool = False

    def __str__(self) -> str:
        text = (f"{len(self.matched)} features ({self.categories_transferred} category levels) transferred, "
                f"{len(self.new_at_target)} new at the target, {len(self.only_at_source)} only at the source")
        if self.unit_mismatches:
            text += f"; unit mismatches: {self.unit_mismatches}"
        return text


@dataclass
class FeatureEmbeddingCheckpoint:
    tensors: dict[str, torch.Tensor]
    vocabulary: FeatureVocabulary
    config: dict

    @classmethod
    def load(cls, path: str | Path, revision: str | None = None) -> "FeatureEmbeddingCheckpoint":
        """Read and verify a checkpoint from a local folder or a Hub repo id (downloaded, or taken from the local
        cache when `HF_HUB_OFFLINE=1`)."""
        path = Path(path) if Path(path).is_dir() else Path(snapshot_download(str(path), revision=revision))
        config_path = path / CONFIG_FILE
        if not config_path.exists():
            raise FileNotFoundError(f"{path}: no {CONFIG_FILE}; not a MedFuse feature-embedding checkpoint")
        config = json.loads(config_path.read_text())
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{config_path}: format_version {config.get('format_version')!r}, expected {FORMAT_VERSION}")
        for name, expected in config["sha256"].items():
            if not (path / name).exists() or sha256_of(path / name) != expected:
                raise ValueError(f"{path / name}: missing or does not match its recorded SHA-256; download it again")
        return cls(load_file(path / TENSORS_FILE), FeatureVocabulary.load(path / VOCABULARY_FILE), config)

    def in_target_units(self, conversions: dict[str, float]) -> FeatureVocabulary:
        """The source vocabulary with statistics of the named features multiplied by a declared unit factor
        (e.g. creatinine mg/dL -> µmol/L: 88.42), for a target that normalises with the source's statistics."""
        converted = FeatureVocabulary()
        for spec in self.vocabulary:
            if spec.name in conversions and spec.statistics is not None:
                factor = conversions[spec.name]
                stats = spec.statistics
                spec = replace(spec, statistics=replace(
                    stats, mean=stats.mean * factor, std=stats.std * abs(factor), q25=stats.q25 * factor,
                    median=stats.median * factor, q75=stats.q75 * factor, lower=stats.lower * factor,
                    upper=stats.upper * factor,
                ))
            converted.add(replace(spec, aliases=list(spec.aliases)))
        return converted


def export_feature_embeddings(
    model, tokenizer, path: str | Path, source: str | None = None, min_patients: int = 20
) -> dict[str, list[str]]:
    """Write the feature-embedding checkpoint of a trained MedFuse model; returns which features had their
    statistics withheld (seen in fewer than `min_patients` patients)."""
    base = model.medfuse if hasattr(model, "medfuse") else model
    embeddings = base.embeddings
    config = base.config
    vocabulary = tokenizer.feature_vocabulary
    if len(vocabulary) != config.vocab_size:
        raise ValueError(f"tokenizer vocabulary has {len(vocabulary)} ids, the model {config.vocab_size}")
    tensors: dict[str, torch.Tensor] = {}
    fusion = embeddings.value_fusion
    offsets = vocabulary.category_offsets()
    for feature_id, spec in enumerate(vocabulary, start=UNK_ID + 1):
        tensors[f"identity/{spec.name}"] = embeddings.feature_embeddings.weight[feature_id]
        if hasattr(fusion, "gamma"):
            tensors[f"gamma/{spec.name}"] = fusion.gamma[feature_id]
            tensors[f"beta/{spec.name}"] = fusion.beta[feature_id]
        if spec.kind == "categorical" and embeddings.categorical_fusion is not None:
            for index, level in enumerate(spec.categories):
                tensors[f"category/{spec.name}={level}"] = embeddings.categorical_fusion.category_embeddings.weight[offsets[feature_id] + index]
    for prefix, module in _shared_projectors(embeddings).items():
        for name, parameter in module.named_parameters():
            tensors[f"{prefix}/{name}"] = parameter
    tensors = {key: value.detach().float().cpu().contiguous().clone() for key, value in tensors.items()}

    guarded, withheld = privacy_guarded(vocabulary, min_patients)
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
        "fusion": config.fusion,
        "privacy": {"min_patients_for_statistics": min_patients, "counts_rounded_to": COUNT_GRANULARITY,
                    "statistics_withheld": withheld},
        "sha256": {name: sha256_of(path / name) for name in (TENSORS_FILE, VOCABULARY_FILE)},
    }
    (path / CONFIG_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return {"statistics_withheld": withheld}


def load_feature_embeddings(
    model,
    path: str | Path,
    vocabulary: FeatureVocabulary,
    match_by: str = "name",
    freeze: bool = False,
    unit_conversions: dict[str, float] | None = None,
) -> TransferReport:
    """Copy a checkpoint's embeddings into `model` for the features of its `vocabulary` that match one at the source.

    `match_by="name"` matches canonical names only; `"code"` also codes; `"alias"` also aliases. Target features
    without a match keep their fresh initialisation. `freeze=True` keeps everything transferred (rows and shared
    maps) exactly as loaded while the target's new features train (see `FrozenTransfer`).
    A unit mismatch on a matched feature is reported; with a factor in `unit_conversions` it is recorded as
    converted (use `FeatureEmbeddingCheckpoint.in_target_units` for the statistics).
    """
    if match_by not in MATCH_METHODS:
        raise ValueError(f"match_by must be one of {MATCH_METHODS}, got {match_by!r}")
    checkpoint = FeatureEmbeddingCheckpoint.load(path)
    base = model.medfuse if hasattr(model, "medfuse") else model
    config, embeddings = base.config, base.embeddings
    for key in ("hidden_size", "value_embedding_size", "fusion"):
        if checkpoint.config[key] != getattr(config, key):
            raise ValueError(
                f"{path}: {key} is {checkpoint.config[key]!r} in the checkpoint but {getattr(config, key)!r} in the "
                "model; build the model with the checkpoint's settings to reuse its embeddings"
            )
    if len(vocabulary) != config.vocab_size:
        raise ValueError(f"vocabulary has {len(vocabulary)} ids, the model {config.vocab_size}")
    alignment = vocabulary.align(checkpoint.vocabulary, methods=MATCH_METHODS[: MATCH_METHODS.index(match_by) + 1])
    matched = alignment.matched
    unit_conversions = unit_conversions or {}
    mismatches, converted = {}, {}
    fusion = embeddings.value_fusion
    offsets = vocabulary.category_offsets()
    category_rows = []
    with torch.no_grad():
        shared = _copy_shared_maps(embeddings, checkpoint.tensors, path)
        for here, there in matched.items():
            feature_id = vocabulary.id_of(here)
            embeddings.feature_embeddings.weight[feature_id] = checkpoint.tensors[f"identity/{there}"]
            if hasattr(fusion, "gamma") and f"gamma/{there}" in checkpoint.tensors:
                fusion.gamma[feature_id] = checkpoint.tensors[f"gamma/{there}"]
                fusion.beta[feature_id] = checkpoint.tensors[f"beta/{there}"]
            if feature_id in offsets and "categorical_projector" in shared:  # levels mean nothing without their map
                for index, level in enumerate(vocabulary.spec_of(here).categories):
                    if f"category/{there}={level}" in checkpoint.tensors:
                        row = offsets[feature_id] + index
                        embeddings.categorical_fusion.category_embeddings.weight[row] = checkpoint.tensors[f"category/{there}={level}"]
                        category_rows.append(row)
            source_unit, target_unit = checkpoint.vocabulary.spec_of(there).unit, vocabulary.spec_of(here).unit
            if source_unit and target_unit and source_unit != target_unit:
                mismatches[here] = (source_unit, target_unit)
                if here in unit_conversions:
                    converted[here] = unit_conversions[here]
    if freeze:
        feature_ids = [vocabulary.id_of(here) for here in matched]
        rows = {embeddings.feature_embeddings.weight: feature_ids}
        if hasattr(fusion, "gamma"):
            rows.update({fusion.gamma: feature_ids, fusion.beta: feature_ids})
        if category_rows:
            rows[embeddings.categorical_fusion.category_embeddings.weight] = category_rows
        projectors = _shared_projectors(embeddings)
        FrozenTransfer(embeddings, rows, [projectors[name] for name in shared])
    return TransferReport(
        matched=matched,
        matched_by={here: alignment.how[here] for here in matched},
        new_at_target=[spec.name for spec in vocabulary if spec.name not in matched],
        only_at_source=[spec.name for spec in checkpoint.vocabulary if spec.name not in set(matched.values())],
        unit_mismatches=mismatches,
        converted_units=converted,
        categories_transferred=len(category_rows),
        frozen=freeze,
    )


def push_feature_embeddings(folder: str | Path, repo_id: str, private: bool = True, token: str | None = None) -> str:
    """Upload an exported checkpoint folder to a Hub model repo (created private unless told otherwise); returns
    the commit URL. A thin wrapper over `HfApi.create_repo` + `upload_folder`, tested against a local stand-in Hub
    that takes every file inline in the commit: LFS/Xet large-file uploads and the Hub's permission checks are not
    covered."""
    if not (Path(folder) / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{folder}: no {CONFIG_FILE}; export the checkpoint with export_feature_embeddings first")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="Upload MedFuse feature embeddings").commit_url


def _shared_projectors(embeddings) -> dict[str, torch.nn.Module]:
    """The maps every feature shares, transferred with the per-feature rows they were trained with: the value
    projector φ that γ_f, β_f modulate, the concatenation ablation's map, and the categorical fusion's map."""
    projectors = {}
    if hasattr(embeddings.value_fusion, "value_projector"):
        projectors["value_projector"] = embeddings.value_fusion.value_projector
    if hasattr(embeddings.value_fusion, "proj"):
        projectors["fusion_projector"] = embeddings.value_fusion.proj
    if embeddings.categorical_fusion is not None:
        projectors["categorical_projector"] = embeddings.categorical_fusion.proj
    return projectors


def _copy_shared_maps(embeddings, tensors: dict[str, torch.Tensor], path) -> set[str]:
    """Copy the shared maps the checkpoint has; returns their names. φ is required whenever the model has one; the
    others are missing from a source without categorical features or an older export, and then stay fresh (logged)."""
    copied = set()
    for prefix, module in _shared_projectors(embeddings).items():
        if not all(f"{prefix}/{name}" in tensors for name, _ in module.named_parameters()):
            if prefix == "value_projector":
                raise ValueError(f"{path}: the checkpoint has no value projector φ, which its γ_f, β_f modulate")
            logger.warning("%s: no %s in the checkpoint; it stays freshly initialised", path, prefix)
            continue
        for name, parameter in module.named_parameters():
            parameter.copy_(tensors[f"{prefix}/{name}"])
        copied.add(prefix)
    return copied


class FrozenTransfer:
    """Keeps the transferred parameters exactly as loaded while the rest of the model trains, whatever the optimizer.

    Transferred shared maps stop requiring gradients, so optimizers skip them. Transferred rows of tables the target's
    new features share (identity, γ, β, category levels) get zero gradients and are written back from their loaded
    values before every forward and every `state_dict`: that undoes AdamW's decoupled weight decay, which moves
    a parameter even where its gradient is zero.
    """

    def __init__(self, embeddings, rows: dict[torch.nn.Parameter, list[int]], shared_maps: list[torch.nn.Module]):
        for module in shared_maps:
            module.requires_grad_(False)
        self.rows = {parameter: (torch.tensor(index), parameter.detach()[index].clone())
                     for parameter, index in rows.items() if index}
        for parameter, (index, _) in self.rows.items():
            keep = torch.ones(parameter.shape[0], *([1] * (parameter.dim() - 1)))
            keep[index] = 0.0
            parameter.register_hook(lambda grad, keep=keep: grad * keep.to(grad.device, grad.dtype))
        embeddings.register_forward_pre_hook(lambda module, inputs: self.restore())
        embeddings.register_state_dict_pre_hook(lambda module, prefix, keep_vars: self.restore())

    @torch.no_grad()
    def restore(self) -> None:
        for parameter, (index, values) in self.rows.items():
            if values.device != parameter.device:  # the model moved (e.g. to the GPU) after loading
                self.rows[parameter] = index, values = index.to(parameter.device), values.to(parameter.device)
            parameter[index] = values.to(parameter.dtype)


def privacy_guarded(vocabulary: FeatureVocabulary, min_patients: int = 20) -> tuple[FeatureVocabulary, list[str]]:
    """The vocabulary as it may leave the hospital, and the features whose statistics it withholds: only the
    vocabulary's own fields, statistics of features seen in fewer than `min_patients` patients withheld (their
    quartiles and fences are close to those patients' values), counts rounded down to tens."""
    if min_patients < MIN_PATIENTS_FLOOR:
        raise ValueError(f"min_patients={min_patients}: statistics of fewer than {MIN_PATIENTS_FLOOR} patients are "
                         "never shared; use a threshold of at least that")
    guarded, withheld = FeatureVocabulary(), []
    for spec in vocabulary:
        statistics = spec.statistics
        if statistics is not None and statistics.num_patients < min_patients:
            withheld.append(spec.name)
            statistics = None
        elif statistics is not None:
            statistics = replace(statistics, count=_coarsen(statistics.count), num_patients=_coarsen(statistics.num_patients))
        guarded.add(replace(spec, aliases=list(spec.aliases), statistics=statistics))
    return guarded, withheld


def _coarsen(count: int) -> int:
    return int(math.floor(count / COUNT_GRANULARITY) * COUNT_GRANULARITY)



__all__ = [
    "FeatureEmbeddingCheckpoint",
    "TransferReport",
    "export_feature_embeddings",
    "load_feature_embeddings",
    "privacy_guarded",
    "push_feature_embeddings",
]
