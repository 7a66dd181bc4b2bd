"""Building blocks the recipes share: cohorts, metrics, checkpoints, tracking, run records and plots."""

from ..privacy import HubPrivacyCallback
from .checkpointing import CorruptCheckpointError, load_checkpoint, resolve_checkpoint, save_checkpoint
from .cohorts import Cohort, load_cohort
from .evaluation import predict
from .metrics import CLINICAL_METRICS, binary_metrics, bootstrap_intervals, trainer_compute_metrics
from .tracking import JSONLinesTracker, read_metrics

__all__ = [
    "CLINICAL_METRICS",
    "Cohort",
    "CorruptCheckpointError",
    "JSONLinesTracker",
    "HubPrivacyCallback",
    "binary_metrics",
    "bootstrap_intervals",
    "load_checkpoint",
    "load_cohort",
    "predict",
    "read_metrics",
    "resolve_checkpoint",
    "save_checkpoint",
    "trainer_compute_metrics",
]
