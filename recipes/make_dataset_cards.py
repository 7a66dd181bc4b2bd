"""Writes the dataset cards of PhysioNet 2012 and PhysioNet 2019 (hospital A and B) from the raw release files.

    python recipes/make_dataset_cards.py --data_dir ../shared/data --output_dir model_cards/datasets
"""

import json
from pathlib import Path

from medfuse_hf.data import load_physionet2012, load_physionet2019
from medfuse_hf.data.dataset_card import describe_cohort, render_dataset_card
from medfuse_hf.training.cohorts import load_p19_task
from medfuse_hf.training.recipe_config import recipe_parser

P12_DESCRIPTION = """
PhysioNet/Computing in Cardiology Challenge 2012: 12,000 adult ICU stays (sets a, b, c) with up to 48 hours of
vitals and labs, loaded with `medfuse_hf.data.load_physionet2012` (canonical feature names, -1 "missing" rows
dropped; the 12 stays without time series are excluded). Task: in-hospital mortality. Licence: Open Data Commons
Attribution v1.0. Cite Silva et al., Computing in Cardiology 2012;39:245-248, and Goldberger et al., Circulation
2000. Static descriptors (age, gender, height, ICU type, first weight) appear as time-0 events. "Missing
(patients)" is the share of stays in which the feature was never measured.
"""
P19_DESCRIPTION = """
PhysioNet/Computing in Cardiology Challenge 2019: 40,336 ICU patients from two hospital systems (A: 20,336,
B: 20,000), hourly grids loaded with `medfuse_hf.data.load_physionet2019` (observed cells only, canonical names
shared with PhysioNet 2012). Tasks: `whole-stay`, the patient is labelled septic at any hour (hourly `SepsisLabel`
turns 1 six hours before clinical onset), from every event; `first-24h` (early prediction, used by the transfer
benchmark), from the events of the first 24 ICU hours of patients still in the ICU after hour 24 and not labelled
septic by then, the patient is labelled septic later. Licence: Creative Commons Attribution 4.0. Cite Reyna et
al., Crit Care Med 2020;48(2):210-217, and Goldberger et al., Circulation 2000. "Missing (patients)" is the share
of patients in whom the feature was never measured.
"""


def main() -> None:
    parser = recipe_parser(__doc__)
    parser.add_argument("--data_dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--output_dir", type=Path, default=Path("model_cards/datasets"))
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)

    p12 = load_physionet2012(args.data_dir / "physionet2012")
    p12_cohorts = {"All sets (a, b, c)": describe_cohort(p12, "in_hospital_death")}
    for set_name in "abc":
        subset = p12.filter(lambda name: name == set_name, input_columns="set")
        p12_cohorts[f"Set {set_name}"] = describe_cohort(subset, "in_hospital_death")
    p19 = load_physionet2019(args.data_dir / "physionet2019")
    p19_cohorts = {
        f"Hospital system {hospital}": describe_cohort(p19.filter(lambda h: h == hospital, input_columns="hospital"),
                                                       "sepsis")
        for hospital in "AB"
    }
    for hospital in "AB":
        early = load_p19_task(args.data_dir / "physionet2019", "first-24h", hospital)
        p19_cohorts[f"Hospital system {hospital}, first-24h"] = describe_cohort(early, "sepsis")
    for name, title, description, cohorts in (
        ("physionet2012", "PhysioNet 2012 (P12): ICU mortality", P12_DESCRIPTION, p12_cohorts),
        ("physionet2019", "PhysioNet 2019 (P19): sepsis, two hospital systems", P19_DESCRIPTION, p19_cohorts),
    ):
        (args.output_dir / f"{name}.md").write_text(render_dataset_card(title, description, cohorts), encoding="utf-8")
        (args.output_dir / f"{name}.json").write_text(json.dumps(cohorts, indent=1) + "\n", encoding="utf-8")
        summary = "; ".join(f"{cohort}: {c['patients']:,} patients, label {c['label']['rate_percent']}%"
                            for cohort, c in cohorts.items())
        print(f"wrote {args.output_dir / name}.md ({summary})")


if __name__ == "__main__":
    main()
