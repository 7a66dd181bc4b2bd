"""Real cohorts in, patients out: loaders that turn clinical sources into `datasets.Dataset`s of triplets."""

from .clinical_features import clinical_vocabulary
from .long_format import load_long_format
from .mimic3 import load_mimic3_benchmark_root
from .patient_table import LoadSummary
from .physionet2012 import load_physionet2012
from .physionet2019 import load_physionet2019

__all__ = [
    "LoadSummary",
    "clinical_vocabulary",
    "load_long_format",
    "load_mimic3_benchmark_root",
    "load_physionet2012",
    "load_physionet2019",
]
