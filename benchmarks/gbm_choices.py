"""What the summary-statistics GBM chose on validation, row by row: its settings and boosting iterations, from the
committed results (nothing is fitted). The audit in RESULTS ("An audit of the GBM's choices") reads these.

    python benchmarks/gbm_choices.py
"""

import json

from protocol import ROOT

RESULTS = ROOT / "benchmarks" / "results"
SOURCES = {  # results file -> the rows that are the GBM, and how a row is named
    RESULTS / "p12_table.json": (lambda row: row["model"] == "gbm_summary",
                                 lambda row: f"{row['protocol']}, all stays"),
    RESULTS / "pretraining" / "medfuse_round_two" / "p12_label_efficiency.json": (
        lambda row: row["arm"] == "gbm", lambda row: f"{row['validation']} validation, fraction {row['fraction']:g}"),
}


def main() -> None:
    print("| rows | seed | statistics | learning rate | leaves | L2 | iterations |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for path, (is_gbm, cell_of) in SOURCES.items():
        rows = sorted((row for row in json.loads(path.read_text()) if is_gbm(row) and "settings" in row),
                      key=lambda row: (cell_of(row), row["seed"]))
        for row in rows:
            chosen = row["settings"]
            print(f"| {cell_of(row)} | {row['seed']} | {chosen['statistics']} | {chosen['learning_rate']:g} | "
                  f"{chosen['max_leaf_nodes']} | {chosen['l2_regularization']:g} | {chosen['iterations']} |")


if __name__ == "__main__":
    main()
