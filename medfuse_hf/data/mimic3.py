"""MIMIC-III in the layout of the mimic3-benchmarks extraction: `root/<SUBJECT_ID>/events.csv` + `stays.csv`.

A worked example of `load_long_format` on a real hospital-style table: MIMIC item ids are mapped to canonical
names (`clinical_features.MIMIC3_ITEMS`), Fahrenheit temperatures converted, timestamps turned into hours since
ICU admission (`INTIME`), and the stays' outcomes (`MORTALITY_INHOSPITAL`, ...) joined as labels. Works on the
100-patient MIMIC-III demo shipped in `shared/data/mimic3_demo` and on full MIMIC-III extractions alike.
"""

import tarfile
import tempfile
from pathlib import Path

import datasets
import pandas as pd

from .clinical_features import MIMIC3_FAHRENHEIT_ITEMS, MIMIC3_ITEMS
from .long_format import load_long_format
from .patient_table import LoadSummary
from .release_files import utf8_errors_named

COLUMNS = {"patient_id": "SUBJECT_ID", "time": "CHARTTIME", "feature": "ITEMID", "value": "VALUE"}


def load_mimic3_benchmark_root(
    root: str | Path, max_hours: float | None = 48.0, return_summary: bool = False
) -> datasets.Dataset | tuple[datasets.Dataset, LoadSummary]:
    """One row per ICU stay of the first stay per subject, events of its first `max_hours` hours, up to its
    discharge from the ICU (`OUTTIME`).

    `root` is the extraction's `root/` folder or a `.tar.gz` of it.
    """
    root = Path(root)
    if root.suffix == ".gz":
        with tempfile.TemporaryDirectory() as folder, tarfile.open(root) as archive:
            archive.extractall(folder, filter="data")
            return load_mimic3_benchmark_root(Path(folder) / "root", max_hours, return_summary)
    subjects = sorted(path for path in root.iterdir() if (path / "events.csv").exists())
    stays = pd.concat([_read_stays(path / "stays.csv") for path in subjects])
    stays = stays.sort_values("INTIME").drop_duplicates("SUBJECT_ID")  # first ICU stay of each subject
    to_celsius = {str(item): (lambda fahrenheit: (fahrenheit - 32.0) * 5.0 / 9.0) for item in MIMIC3_FAHRENHEIT_ITEMS}
    return load_long_format(
        [path / "events.csv" for path in subjects],
        labels=stays,
        columns=COLUMNS,
        feature_map={str(item): name for item, name in MIMIC3_ITEMS.items()},
        value_transforms=to_celsius,
        anchor_column="INTIME",
        max_hours=max_hours,
        end_column="OUTTIME",  # a subject's events.csv holds every stay's and admission's: this stay's alone
        return_summary=return_summary,
    )


def _read_stays(path: Path) -> pd.DataFrame:
    with utf8_errors_named(path):
        return pd.read_csv(path)
