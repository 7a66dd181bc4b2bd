"""The protocol every P12 benchmark shares, declared once: where the repository is, the models and the fine-tuning
budget of the P12 table, the small-cohort fine-tuning that the label-efficiency and transfer experiments add to it,
and the pretraining budget. A benchmark imports these, never another benchmark's constants."""

from collections.abc import Callable
from pathlib import Path

from medfuse_hf.integrity import sha256_of

ROOT = Path(__file__).resolve().parents[1]
RELEASED_BASE = ROOT / "model_cards" / "medfuse-base" / "model"  # the base `recipes/configs/medfuse-base.yaml` made

MODELS = {  # the only flags that differ between variants: everything else is the shared budget below
    "medfuse": ["--fusion", "multiplicative"],
    "additive": ["--fusion", "additive"],
    "concat": ["--fusion", "concat"],
    "scane": ["--fusion", "scane"],
    "strats_cve": ["--fusion", "additive", "--time_embedding", "cve"],  # STraTS: CVE of value and of time, added
    # Diagnostic, not one of the paper's rows: strats_cve is `additive` with a CVE of time instead of the sinusoidal
    # encoding, and beat it by 0.017 AUPRC over seeds 0-1; this cell asks whether MuFuse gains the same.
    "medfuse_cve_time": ["--fusion", "multiplicative", "--time_embedding", "cve"],
    # The accuracy search's leader (`p12_search.py`, round two): medfuse_cve_time with a per-feature view of the stay,
    # quantile values, head and event dropout and a 30-epoch cosine schedule. Its rows are the search's own three runs,
    # tested again from their run folders rather than trained again.
    "medfuse_round_two": ["--fusion", "multiplicative", "--time_embedding", "cve", "--pooling", "per_feature",
                          "--value_normalization", "quantile", "--classifier_dropout", "0.4", "--event_dropout", "0.1",
                          "--num_epochs", "30", "--lr_scheduler", "cosine", "--patience", "8"],
}
# The search's lever 5: round two's leader started from the released base by LP-FT (the head fitted on the frozen
# base, then everything at a tenth of the rate). Its rows, too, are the search's runs tested again.
MODELS["medfuse_round_two_lpft"] = [*MODELS["medfuse_round_two"], "--init_from", str(RELEASED_BASE),
                                    "--strategy", "lp-ft"]
BUDGET = [  # paper-sized model (the config defaults); optimisation chosen once, before any table run, for a CPU budget
    "--max_events", "1024", "--batch_size", "64", "--learning_rate", "1e-3", "--weight_decay", "0.01",
    "--num_epochs", "15", "--warmup_ratio", "0.05", "--patience", "5", "--early_stopping_metric", "auprc",
    "--class_weighting", "balanced", "--bootstrap_resamples", "1000",
]


def finetune_flags(model: str) -> list[str]:
    """A model of the P12 table at its budget, with a floor of optimizer steps so that 1 % (~77 stays) is trained too,
    as in the transfer experiment: how the label-efficiency and objective experiments fine-tune."""
    return [*BUDGET, *MODELS[model], "--min_steps", "300"]


# Round one's best MedFuse (MuFuse with the CVE of time, the accuracy search's reference): the first base's arms.
FINETUNE = finetune_flags("medfuse_cve_time")
# The fine-tuned model's encoder (FINETUNE's: MuFuse, CVE of time), a global batch of 64 patients, ~2 passes over
# the corpus's 48,007 patients: what fits this comparison into a CPU session.
PRETRAIN = ["--time_embedding", "cve", "--batch_size", "64", "--learning_rate", "1e-3", "--num_epochs", "10",
            "--checkpoint_every_steps", "250", "--seed", "0"]


def weights_digest(model_dir: str | Path) -> str:
    """A model folder's weights named by their hash: what a row or a cached representation was computed from, which a
    path cannot say (a base is released elsewhere, or pretrained again in place)."""
    return file_digest(Path(model_dir) / "model.safetensors")


def file_digest(path: str | Path) -> str:
    """A file named by the start of its SHA-256, short enough for a file or row name."""
    return sha256_of(path)[:12]


def refuse_rows_of_another_base(rows: list[dict], name_of: Callable[[dict], str]) -> None:
    """Rows that started from a base (`init_weights`) must have started from `RELEASED_BASE` as it is now, unless
    their name says which weights they started from (`<name>@<digest>`, as the lost first pretraining's rows do):
    were the base pretrained again in place, its finished cells would otherwise be skipped and read as the new
    base's."""
    current = weights_digest(RELEASED_BASE)
    stale = sorted({f"{name_of(row)} (seed {row['seed']}, weights {row['init_weights']})" for row in rows
                    if row.get("init_weights") not in (None, current) and "@" not in name_of(row)})
    if stale:
        raise SystemExit(f"rows started from other weights than the released base's ({current}): {stale[:5]}; "
                         "rename them <name>@<their weights> to keep them, or remove them to run the cells again")


def refuse_other_extra_args(rows: list[dict], extra_args: str, results: Path) -> None:
    """One results file, one set of `--extra_args`: they change what every cell measures (`--mixed_precision bf16`,
    another rate), and a cell finished under others would be skipped and averaged with these under the same name.
    Rows record their `extra_args` where there were any."""
    others = sorted({row.get("extra_args", "") for row in rows} - {extra_args})
    if others:
        raise SystemExit(f"{results} holds rows run with other --extra_args ({others}) than these ({extra_args!r}): "
                         "their finished cells would be taken for these; write to another --results")
