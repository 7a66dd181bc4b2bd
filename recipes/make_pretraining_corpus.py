"""Write a self-supervised pretraining corpus as Parquet shards, events only, no labels: the public corpus (every
PhysioNet 2019 patient, both hospital systems, whole stays, and the stays of PhysioNet 2012's SeFT training split,
unless `--p12_dir` is left out), a hospital's own long-format export (`--dataset long-format`), read in bounded
memory however large it is, or both (the public corpus with `--events ...`). Without P12, a base pretrained on the
corpus never saw a P12 stay: the setting of a hospital that downloads a base pretrained elsewhere. With the export,
the base has seen the hospital's own unlabelled stays and every feature it measures.

P12's validation and test stays are left out, and checked absent, so that a model pretrained on the corpus is
fine-tuned and scored on P12 stays it has never seen; so are an export's, given the `--split_file` its fine-tuning
runs will use (without it, the base sees every stay's events, though never an outcome). `corpus.json` beside the
shards records what went in (patients and events per source, their licences and citations); `recipes/pretrain.py`
reads it into the base model's card.
Each patient is one row of one shard (the schema is in the README), so a patient never straddles two shards.
`--validation_fraction` of the patients (5 %) go to `validation/` instead, held out of training: pretraining reports
its objective's loss on them each epoch, and with `--patience` stops once that loss stops falling.

    python recipes/make_pretraining_corpus.py --p19_dir ../shared/data/physionet2019 \
        --p12_dir ../shared/data/physionet2012 --output_dir outputs/pretraining-corpus
    python recipes/make_pretraining_corpus.py --p19_dir ../shared/data/physionet2019 --output_dir outputs/corpus-p19
    python recipes/make_pretraining_corpus.py --dataset long-format --events export/*.csv \
        --feature_map items.csv --data_description "ICU stays of St Elsewhere, 2015-2024" --output_dir outputs/corpus
    python recipes/make_pretraining_corpus.py --p19_dir ../shared/data/physionet2019 --events export/*.csv \
        --feature_map items.csv --data_description "ICU stays of St Elsewhere, 2015-2024" --output_dir outputs/corpus
    accelerate launch recipes/pretrain.py --parquet_shards "outputs/pretraining-corpus/*.parquet" \
        --validation_shards "outputs/pretraining-corpus/validation/*.parquet" --patience 2 --num_epochs 10
"""

import argparse
from pathlib import Path

import datasets
import pyarrow.compute as pc

from medfuse_hf.data import LongFormatOptions, clinical_vocabulary, load_long_format, seft_split
from medfuse_hf.data.clinical_features import NUMERIC_FEATURES
from medfuse_hf.data.shards import (
    VALIDATION_FOLDER,
    events_only,
    held_out_count,
    refuse_written_shards,
    shard_patient_ids,
    shuffled_corpus,
    write_corpus_manifest,
    write_patient_shards,
)
from medfuse_hf.progress import quiet_library_progress_bars
from medfuse_hf.training.cohorts import (
    P12_TERMS,
    P19_TERMS,
    feature_names,
    hospital_split,
    load_cohort,
    load_p19_task,
)
from medfuse_hf.training.recipe_config import add_long_format_arguments, existing_table, recipe_parser
from medfuse_hf.units import check_units

DESCRIPTION = "PhysioNet 2019 (all patients, hospital systems A and B)"
WITH_P12 = " and the PhysioNet 2012 SeFT training split"
PUBLIC_TERMS = {"p19": P19_TERMS, "p12": P12_TERMS}  # by source name, the prefix of the source's patient ids


def export_sources(args: argparse.Namespace, joins_public: bool) -> tuple[dict[str, datasets.Dataset], set[str], int,
                                                                        dict[str, str]]:
    """A hospital's long-format export as one source, its patients' events only (`--labels` may give anchors), the
    ids (as the shards write them) of `--split_file`'s validation and test patients, how many of the export's
    patients those left out, and its features' units as read. Joining the public corpus (`joins_public`), whose
    values are in the clinical catalogue's units, it is refused in other units, or without units unless
    `--assume_catalogue_units` vouches for them (those then count as read)."""
    options = LongFormatOptions.from_settings(vars(args))
    patients, summary = load_long_format(args.events, args.labels, return_summary=True, **options.as_kwargs())
    units = dict(summary.units)
    if joins_public:
        catalogued = [name for name in feature_names(patients) if name in NUMERIC_FEATURES]
        units |= check_units(clinical_vocabulary(catalogued), units, args.data_description, catalogued,
                             args.assume_catalogue_units, events_without_unit=summary.events_without_unit,
                             whose="the public corpus's",
                             vouching_flag="--assume_catalogue_units")
    events = events_only(patients, args.source_name, "patient_id")
    if not args.split_file:
        return {args.source_name: events}, set(), 0, units
    split = hospital_split(args.split_file)
    held_out = {f"{args.source_name}:{patient}" for name in ("validation", "test") for patient in split[name]}
    kept = events.filter(lambda patient: patient not in held_out, input_columns="patient_id")
    print(f"{args.split_file}: {len(events) - len(kept):,} of the export's patients are in its validation or test "
          "split, and left out")
    return {args.source_name: kept}, held_out, len(events) - len(kept), units


def corpus_sources(p19_dir: str, p12_dir: str | None) -> tuple[dict[str, datasets.Dataset], set[str]]:
    """The corpus' sources, and the ids of the P12 stays that must stay out of it (its validation and test)."""
    p19 = load_p19_task(Path(p19_dir), "whole-stay", hospital=None)  # every patient, no split needed
    if p12_dir is None:
        return {"p19": events_only(p19, "p19", "patient_id")}, set()
    p12 = load_cohort("p12", p12_dir, "seft-split")
    split = seft_split(Path(p12_dir) / "splits_seft")  # every listed stay, loaded or not
    held_out = {f"p12:{record}" for name in ("validation", "test") for record in split[name]}
    sources = {"p19": events_only(p19, "p19", "patient_id"),
               "p12": events_only(p12.splits["train"], "p12", "record_id")}
    return sources, held_out


def check_shards(shards: list[Path], held_out: set[str], patients: int) -> None:
    """Read the written shards back (training and validation): every patient once, and no validation or test stay
    (P12's, or the export's `--split_file`'s) among them."""
    written = [patient for path in shards for patient in shard_patient_ids(path)]
    leaked = held_out.intersection(written)
    if leaked or len(set(written)) != len(written) or len(written) != patients:
        raise SystemExit(f"the shards in {shards[0].parent} hold {len(written)} of {patients} patients and "
                         f"{len(leaked)} validation/test stays (e.g. {sorted(leaked)[:3]}): delete them")


def event_count(events: datasets.Dataset) -> int:
    """Events of a source, counted from the Arrow list lengths (not by building 10 M Python strings)."""
    return int(pc.sum(pc.list_value_length(events.with_format("arrow")["feature"])).as_py())


def manifest(
    sources: dict[str, datasets.Dataset], shards: list[Path], description: str, terms: dict[str, dict],
    read_units: dict[str, dict[str, str]], **extra
) -> dict:
    """What `corpus.json` says: the corpus, each source's size, features, licence and citation, an export's units
    as read (`read_units`, which the base's vocabulary records: `pretraining.corpus_units`), and the shards."""
    return {
        "description": description,
        "sources": {
            name: {"patients": len(events), "events": event_count(events), "features": sorted(feature_names(events)),
                   "license": terms[name]["license"], "citation": terms[name]["citation"],
                   **({"units": read_units[name]} if name in read_units else {})}
            for name, events in sources.items()
        },
        **extra,
        "shards": [path.name for path in shards],
    }


def refuse_export_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Before any data loads: an export needs its description and a source name of its own, and flags that read an
    export without `--events` would be silently ignored."""
    if args.events:
        if not args.data_description:
            parser.error("--events needs --data_description: what the export is, for corpus.json and the base's card")
        if args.source_name in PUBLIC_TERMS:
            parser.error(f"--source_name {args.source_name} is a public source's name: give the export another")
        if args.assume_catalogue_units and args.dataset == "long-format":
            parser.error("--assume_catalogue_units vouches for an export that joins the public corpus; alone, its "
                         "values are kept in their own units (those it gives are recorded): leave it out")
        return
    if args.dataset == "long-format":
        parser.error("--dataset long-format needs --events and --data_description")
    read_an_export = LongFormatOptions.from_settings(vars(args)) != LongFormatOptions()
    if read_an_export or args.labels or args.data_description or args.split_file or args.assume_catalogue_units:
        parser.error("flags that read a hospital's export were given without --events: give --events too, or "
                     "leave them out")


def main(argv: list[str] | None = None) -> None:
    parser = recipe_parser(__doc__)
    parser.add_argument("--dataset", choices=("public", "long-format"), default="public",
                        help="P19 and P12's training split (with a hospital's export too if --events is given), or "
                             "the export alone")
    parser.add_argument("--p19_dir", help="public: holds training_setA/B (.zip or folders)")
    parser.add_argument("--p12_dir", help="public: holds set-a/b/c, the Outcomes files and splits_seft/; without "
                                          "it, the corpus is P19 alone")
    parser.add_argument("--output_dir", default="outputs/pretraining-corpus",
                        help="where the shards and corpus.json go (pretrain.py --parquet_shards '<dir>/*.parquet')")
    parser.add_argument("--patients_per_shard", type=int, default=4096,
                        help="patients per Parquet shard: the unit each process of a pretraining run streams")
    parser.add_argument("--seed", type=int, default=0, help="the shuffle of patients across shards, and the held-out "
                                                            "validation patients")
    parser.add_argument("--validation_fraction", type=float, default=0.05,
                        help=f"share of the patients written to {VALIDATION_FOLDER}/ instead, for pretraining's "
                             "validation loss (pretrain.py --validation_shards --patience); 0 holds none out")
    export = add_long_format_arguments(parser, skip=("label_column", "label_map"))
    export.add_argument("--labels", type=existing_table,
                        help="a table with one row per patient, for --anchor_column only")
    export.add_argument("--split_file", type=existing_table,
                        help="the JSON of train/validation/test patient ids that fine-tuning on the export will use "
                             "(finetune.py --split_file): its validation and test patients are left out")
    export.add_argument("--source_name", default="hospital", help="prefix of the patient ids in the shards")
    export.add_argument("--data_description", help="what the export is, for corpus.json and the base model's card")
    export.add_argument("--data_license", default="private: not for redistribution",
                        help="the terms the export is under, for the card")
    export.add_argument("--data_citation", default="", help="how to cite the export, if at all")
    export.add_argument("--assume_catalogue_units", action="store_true",
                        help="with the public corpus: the export's values that come without a unit are in the "
                             "clinical catalogue's units, as the public sources' are (else such an export is refused)")
    args = parser.parse_args(argv)
    quiet_library_progress_bars()

    output_dir = Path(args.output_dir)
    refuse_export_flags(args, parser)
    export_terms = {args.source_name: {"license": args.data_license, "citation": args.data_citation}}
    if args.dataset == "long-format":
        sources, held_out, left_out, units = export_sources(args, joins_public=False)
        terms, description, extra = export_terms, args.data_description, {}
    else:
        if not args.p19_dir:
            parser.error("the public corpus needs --p19_dir (and --p12_dir for P12's training stays)")
        sources, held_out = corpus_sources(args.p19_dir, args.p12_dir)
        terms = dict(PUBLIC_TERMS)
        description = DESCRIPTION + (WITH_P12 if args.p12_dir else "")
        extra = {"p12_validation_and_test_stays_excluded": len(held_out)} if args.p12_dir else {}
        if args.events:  # the public corpus with the hospital's own unlabelled stays: one corpus, shuffled together
            export, export_held_out, left_out, units = export_sources(args, joins_public=True)
            sources, held_out = sources | export, held_out | export_held_out
            terms |= export_terms
            description += f"; with {args.data_description}"
    if args.split_file:
        extra["export_validation_and_test_patients_excluded"] = left_out
    for folder in (output_dir, output_dir / VALIDATION_FOLDER):  # both checked before either is written
        refuse_written_shards(folder)
    corpus = shuffled_corpus(sources, seed=args.seed)
    validation = held_out_count(len(corpus), args.validation_fraction)
    shards = write_patient_shards(corpus.select(range(validation, len(corpus))), output_dir, args.patients_per_shard)
    validation_shards = (write_patient_shards(corpus.select(range(validation)), output_dir / VALIDATION_FOLDER,
                                              args.patients_per_shard) if validation else [])
    check_shards(shards + validation_shards, held_out, len(corpus))
    if validation:
        extra["validation"] = {"patients": validation,
                               "shards": [str(path.relative_to(output_dir)) for path in validation_shards]}
    read_units = {args.source_name: units} if args.events else {}  # public sources' are the catalogue's
    record = manifest(sources, shards, description, terms, read_units, **extra)
    write_corpus_manifest(output_dir, record)
    counts = ", ".join(f"{name} {part['patients']:,} patients / {part['events']:,} events"
                       for name, part in record["sources"].items())
    print(f"wrote {len(shards)} shards to {output_dir}: {counts}"
          + (f"; {validation:,} of them held out in {output_dir / VALIDATION_FOLDER}" if validation else "")
          + (f"; {len(held_out):,} P12 validation/test stays left out" if held_out else ""))


if __name__ == "__main__":
    main()
