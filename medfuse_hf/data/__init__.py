"""Real cohorts in, patients out: loaders that turn clinical sources into `datasets.Dataset`s of triplets."""

from .bundled_sample import load_physionet2012_sample
from .clinical_features import clinical_vocabulary
from .collator import (
    CountedDraws,
    ForecastingCollator,
    LengthGroupedBatchSampler,
    LengthGroupedStream,
    MaskedValueCollator,
    MedFuseDataCollator,
    RowsWithDraws,
    padding_fraction,
)
from .download import download_physionet2012, download_physionet2019
from .long_format import LongFormatOptions, load_long_format
from .mimic3 import load_mimic3_benchmark_root
from .patient_table import LoadSummary
from .physionet2012 import load_physionet2012
from .physionet2019 import load_physionet2019
from .splits import (
    apply_split,
    load_split,
    nested_subset,
    save_split,
    seft_split,
    set_a_test_split,
    stratified_split,
    validation_subset,
)

__all__ = [
    "CountedDraws",
    "ForecastingCollator",
    "LengthGroupedBatchSampler",
    "LengthGroupedStream",
    "LoadSummary",
    "MaskedValueCollator",
    "MedFuseDataCollator",
    "RowsWithDraws",
    "apply_split",
    "clinical_vocabulary",
    "download_physionet2012",
    "download_physionet2019",
    "load_long_format",
    "LongFormatOptions",
    "load_mimic3_benchmark_root",
    "load_physionet2012",
    "load_physionet2012_sample",
    "load_physionet2019",
    "load_split",
    "nested_subset",
    "padding_fraction",
    "save_split",
    "seft_split",
    "set_a_test_split",
    "stratified_split",
    "validation_subset",
]
