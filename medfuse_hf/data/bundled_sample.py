"""A few hundred real PhysioNet 2012 stays shipped inside the package, so examples and the README's main
command run on a fresh machine with no download. Made by `recipes/make_p12_sample.py`; see
`sample/ATTRIBUTION.md` for source and licence (ODC-BY 1.0).
"""

from pathlib import Path

import datasets
import pyarrow.parquet as pq

SAMPLE_PATH = Path(__file__).parent / "sample" / "physionet2012_sample.parquet"


def load_physionet2012_sample() -> datasets.Dataset:
    """The bundled P12 sample, with the columns of `load_physionet2012` and its fixed `split` column."""
    table = pq.read_table(SAMPLE_PATH)
    return datasets.Dataset.from_dict({name: table[name].combine_chunks() for name in table.column_names})
