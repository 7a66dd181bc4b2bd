"""Writes the bundled PhysioNet 2012 sample: a seeded, outcome-stratified draw of stays from set-a with a fixed
train/validation/test split column.

    python recipes/make_p12_sample.py --data_dir ../shared/data/physionet2012
"""


import pyarrow.parquet as pq
from sklearn.model_selection import train_test_split

from medfuse_hf.data import load_physionet2012
from medfuse_hf.data.bundled_sample import SAMPLE_PATH
from medfuse_hf.data.splits import stratified_split
from medfuse_hf.training.recipe_config import recipe_parser


def main() -> None:
    parser = recipe_parser(__doc__)
    parser.add_argument("--data_dir", required=True, help="the PhysioNet 2012 release (holds set-a and Outcomes-a)")
    parser.add_argument("--num_patients", type=int, default=600, help="stays drawn from set-a, stratified by outcome")
    parser.add_argument("--seed", type=int, default=0, help="the draw, and the sample's own split")
    args = parser.parse_args()

    set_a = load_physionet2012(args.data_dir, sets=["a"])
    keep, _ = train_test_split(
        range(len(set_a)), train_size=args.num_patients, stratify=set_a["in_hospital_death"], random_state=args.seed
    )
    sample = set_a.select(sorted(keep))
    parts = stratified_split(sample["record_id"], sample["in_hospital_death"], (0.7, 0.15, 0.15), seed=args.seed)
    part_of = {record_id: name for name, ids in parts.items() for record_id in ids}
    sample = sample.add_column("split", [part_of[record_id] for record_id in sample["record_id"]])
    SAMPLE_PATH.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(sample.data.table, SAMPLE_PATH, compression="zstd", compression_level=19)
    print(f"wrote {len(sample)} stays ({sum(sample['in_hospital_death'])} deaths) to {SAMPLE_PATH} "
          f"({SAMPLE_PATH.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
