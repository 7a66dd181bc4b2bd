"""Recipe settings from flags and an optional YAML file: the file sets defaults, flags on the command line win.
The flags every recipe shares are declared here once."""

import argparse
import glob
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Literal, get_args, get_origin

import yaml
from transformers.utils import CONFIG_NAME, FEATURE_EXTRACTOR_NAME

from ..data.long_format import matching_files
from ..feature_embeddings import CONFIG_FILE as EMBEDDINGS_CONFIG_FILE
from ..feature_embeddings import could_be_hub_repo_id
from ..feature_vocabulary import ValueNormalization
from ..units import INTO


def recipe_parser(doc: str) -> argparse.ArgumentParser:
    """A recipe's parser: the first paragraph of its docstring as the description, and every flag's default in
    `--help`."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse `argv`; keys of the `--config` YAML become defaults. Unknown keys are an error naming the file."""
    parser.add_argument("--config", type=Path, help="YAML file of flag values, e.g. recipes/configs/p12.yaml")
    declared = {action.dest: action.default for action in parser._actions}
    first, _ = parser.parse_known_args(argv)
    if first.config is not None:
        try:
            values = yaml.safe_load(flag_file_text(str(first.config))) or {}
        except argparse.ArgumentTypeError as error:
            parser.error(f"--config: {error}")
        except yaml.YAMLError as error:
            where = getattr(error, "problem_mark", None)
            parser.error(f"--config: {first.config}: not YAML" + (f" (line {where.line + 1})" if where else ""))
        if not isinstance(values, dict):
            parser.error(f"--config: {first.config}: give setting: value lines, e.g. learning_rate: 0.001")
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SystemExit(f"{first.config}: unknown settings {unknown}; "
                             f"the recipe accepts {sorted(known - {'help', 'config'})}")
        parser.set_defaults(**{key: read_as_flag(parser, key, value, first.config) for key, value in values.items()})
    args = parser.parse_args(argv)
    refuse_settings_the_dataset_ignores(args, declared, parser)
    return args


def read_as_flag(parser: argparse.ArgumentParser, key: str, value: object, source: Path) -> object:
    """A `--config` value read by its flag's own type, as a command line's would be: YAML gives `patience: 0` as
    an int, which argparse would take as it is and no type would check. A mapping (`label_map: {dead: 1}`) is what
    its flag's text would be read into already."""
    action = next(action for action in parser._actions if action.dest == key)
    if action.type is None or value is None or isinstance(value, (str, dict)):
        return value  # argparse reads a string default through the type itself
    try:
        if isinstance(value, list):
            return [action.type(str(item)) for item in value]
        return action.type(str(value))
    except (argparse.ArgumentTypeError, TypeError, ValueError) as error:
        parser.error(f"--config: {source}: {key}: {error}")


def refuse_settings_the_dataset_ignores(args: argparse.Namespace, declared: dict,
                                        parser: argparse.ArgumentParser) -> None:
    """A cohort flag (or `--config` key) that `--dataset` does not read is an error naming it, not a silent no-op:
    `--hospital A` with P12, or `--time_zone` with P19, would otherwise run as if never given; so is any cohort flag
    beside pretraining's streamed `--parquet_shards`. `declared`: the parser's defaults before `--config` set its
    own."""
    from .cohorts import unread_cohort_settings

    given = sorted(key for key in unread_cohort_settings(vars(args))
                   if key in declared and getattr(args, key) != declared[key])
    if given:
        reader = ("--parquet_shards streams its own corpus, not" if getattr(args, "parquet_shards", None)
                  else f"--dataset {args.dataset} does not read")
        parser.error(f"{reader} {', '.join('--' + key for key in given)}; leave them out (or choose the dataset "
                     "they belong to)")


def boolean(text: str) -> bool:
    """A yes/no flag value (`--norm_first true`): argparse's `type=bool` would take "false" as True."""
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def positive_int(text: str) -> int:
    """A count that must be 1 or more (`--patience 0` would stop before the first epoch, `--logging_steps 0` divide
    by zero)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give 1 or more")
    return value


def non_negative_int(text: str) -> int:
    """A count where 0 means none (`--max_steps 0`: no limit)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: give 0 or more")
    return value


def privacy_threshold(text: str) -> int:
    """`--min_patients_for_statistics`, refused when the flags are read rather than at publication, after training."""
    from ..privacy import MIN_PATIENTS_FLOOR

    value = int(text)
    if value < MIN_PATIENTS_FLOOR:
        raise argparse.ArgumentTypeError(f"{value}: statistics of fewer than {MIN_PATIENTS_FLOOR} patients are "
                                         "never shared")
    return value


def add_cohort_arguments(parser: argparse.ArgumentParser, for_a_model: bool = False) -> argparse._ArgumentGroup:
    """The `--dataset` flags and a long-format table's; `for_a_model`: the recipe reads the data for a saved model (to
    evaluate it or start from it), so a table may lean on the model's units (`--assume_model_units`)."""
    from .cohorts import DATASETS

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default="p12-sample")
    data.add_argument("--data_dir", help="folder of the release files (p12, p19) or Parquet splits")
    data.add_argument("--protocol", help="P12 split: seft-split (default), set-a-test or random; "
                                         "P19 task: whole-stay (default) or first-<H>h")
    data.add_argument("--hospital", choices=("A", "B"), help="P19: one hospital system only")
    data.add_argument("--num_patients", type=positive_int, default=512, help="size of the synthetic cohort")
    data.add_argument("--seed", type=int, default=0, help="split, initialisation and data order")
    table = add_long_format_arguments(parser)
    table.add_argument("--labels", type=existing_table,
                       help="long-format: table with one row per patient (patient_id column) and its label")
    table.add_argument("--split_file", type=existing_table,
                       help="long-format: JSON of train/validation/test patient ids (else seeded, stratified)")
    if for_a_model:
        add_model_units_argument(table)
    return data


def add_model_units_argument(table: argparse._ArgumentGroup) -> None:
    """`--assume_model_units`: a table that gives no unit for a feature the model has a unit for is refused
    (`units.check_units`) unless its owner says that every such value is in the model's unit."""
    table.add_argument("--assume_model_units", action="store_true",
                       help="long-format, read for a saved model: a feature the table gives no unit for is in the "
                            "model's unit (else such a table is refused: a value in another unit would be misread)")


def column_mapping(text: str) -> dict[str, str]:
    """`--columns patient_id=SUBJECT_ID,time=CHARTTIME,...`: long-format fields -> the table's column names."""
    from ..data.event_batches import DEFAULT_COLUMNS, OPTIONAL_COLUMNS

    pairs = [part.partition("=") for part in text.split(",") if part.strip()]
    mapping = {field.strip(): column.strip() for field, _, column in pairs}
    fields = [*DEFAULT_COLUMNS, *OPTIONAL_COLUMNS]
    unknown = sorted(set(mapping) - set(fields))
    if unknown or any(not column for column in mapping.values()):
        raise argparse.ArgumentTypeError(f"{text!r}: give field=column pairs for the fields {fields}")
    return mapping


def flag_file_text(path: str) -> str:
    """The text of a file a flag names; one that cannot be read is refused with the flag, naming the file."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else f"not UTF-8 text: {error.reason}"
        raise argparse.ArgumentTypeError(f"{path}: cannot be read ({reason})") from None


def existing_table(text: str) -> str:
    """A table a flag names (`--events`, `--labels`, `--split_file`, `--patients`), or a quoted glob of tables:
    refused as the flags are read when nothing is there, not as a pandas traceback once other tables have loaded and
    the run folder was begun."""
    if matching_files(text):
        return text
    raise argparse.ArgumentTypeError(f"{text}: no file matches this pattern" if glob.has_magic(text)
                                     else f"{text}: no such file")


def existing_shards(text: str) -> str:
    """Parquet shards a flag names, a file or a quoted glob, checked as `existing_table` checks a table. A folder
    named in place of its shards is refused with the glob to give: a stream reads files, not folders."""
    if Path(text).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"{text}: a folder; name its shards, e.g. {str(Path(text) / '*.parquet')!r}")
    return existing_table(text)


def saved_folder(*required: str) -> Callable[[str], str]:
    """A flag type for a saved model (or feature-embedding checkpoint): a local folder holding `required`, or a name
    that may be a Hub repo id. A typo is refused as the flags are read, not after the cohort has loaded, as a
    loader's traceback."""

    def folder(text: str) -> str:
        path = Path(text).expanduser()
        if not path.is_dir():
            if could_be_hub_repo_id(text):
                return text
            raise argparse.ArgumentTypeError(f"{text}: no such folder (a Hub repo id reads 'owner/name')")
        missing = [name for name in required if not (path / name).is_file()]
        if missing:
            inside = [child for child in sorted(path.iterdir()) if all((child / name).is_file() for name in required)]
            raise argparse.ArgumentTypeError(f"{text}: a folder without {' or '.join(missing)}"
                                             + (f"; did you mean {inside[0]}?" if inside else ""))
        return text

    return folder


saved_model = saved_folder(CONFIG_NAME, FEATURE_EXTRACTOR_NAME)  # a MedFuse model with its tokenizer
saved_tokenizer = saved_folder(FEATURE_EXTRACTOR_NAME)
saved_feature_embeddings = saved_folder(EMBEDDINGS_CONFIG_FILE)


def read_unit_conversions(path: str) -> dict:
    """`--unit_conversions PATH`: JSON of feature -> {unit: scale or [scale, offset]}, e.g.
    `{"temperature": {"°F": [0.5556, -17.7778]}}`, converting that unit's rows into the feature's other unit; with
    `"into": "<unit>"`, into that unit, which the table need not hold (`{"base_excess": {"MEQ/L": 1, "into":
    "mmol/L"}}`: a checkpoint's unit)."""
    import json

    try:
        conversions = json.loads(flag_file_text(path))
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"{path}: not JSON ({error.msg}, line {error.lineno} column "
                                         f"{error.colno})") from None
    if not isinstance(conversions, dict) or not all(isinstance(by_unit, dict) for by_unit in conversions.values()):
        raise argparse.ArgumentTypeError(f'{path}: give an object of feature -> {{unit: conversion}}, e.g. '
                                         '{"temperature": {"°F": [0.5556, -17.7778]}}')
    for feature, by_unit in conversions.items():
        if not isinstance(by_unit.get(INTO, ""), str):
            raise argparse.ArgumentTypeError(f"{path}: {feature} {INTO}: give the unit's name, got {by_unit[INTO]!r}")
        for unit, conversion in by_unit.items():
            if unit == INTO:
                continue
            if not (isinstance(conversion, (int, float)) or (isinstance(conversion, list) and len(conversion) == 2)):
                raise argparse.ArgumentTypeError(f"{path}: {feature} {unit}: give a scale or [scale, offset], "
                                                 f"got {conversion!r}")
            by_unit[unit] = tuple(conversion) if isinstance(conversion, list) else conversion
    return conversions


def field_separator(text: str) -> str:
    """`--delimiter ';'`; a tab as a shell passes it unquoted (`\\t`) or by name (`tab`)."""
    separator = "\t" if text in ("\\t", "tab") else text
    if len(separator) != 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give one character, e.g. ';' (or tab)")
    return separator


def label_mapping(text: str) -> dict[str, int]:
    """`--label_map yes=1,no=0`."""
    pairs = [part.partition("=") for part in text.split(",") if part.strip()]
    if any(value.strip() not in ("0", "1") for _, _, value in pairs):
        raise argparse.ArgumentTypeError(f"{text!r}: give text=0 or text=1 pairs, e.g. yes=1,no=0")
    return {key.strip(): int(value) for key, _, value in pairs}


def read_feature_map(path: str) -> dict[str, str]:
    """`--feature_map PATH`: a CSV whose first two columns are the source item (name or id) and its canonical name."""
    import pandas as pd

    table = pd.read_csv(io.StringIO(flag_file_text(path)), dtype=str, keep_default_na=False)
    if table.shape[1] < 2:
        raise argparse.ArgumentTypeError(f"{path}: a feature map needs two columns, source item and canonical name")
    source, canonical = table.iloc[:, 0].str.strip(), table.iloc[:, 1].str.strip()
    repeated = source[source.duplicated()]
    if not repeated.empty:
        raise argparse.ArgumentTypeError(f"{path}: source item {repeated.iloc[0]!r} is mapped twice")
    return dict(zip(source, canonical))


# How the flags' text becomes a long-format option, where it is more than a string or a number.
LONG_FORMAT_PARSERS = {"columns": column_mapping, "feature_map": read_feature_map,
                       "unit_conversions": read_unit_conversions, "label_map": label_mapping,
                       "delimiter": field_separator}


def add_long_format_arguments(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> argparse._ArgumentGroup:
    """How a hospital's long-format event table is read: a flag for each `LongFormatOptions` field (but those in
    `skip`), with its default, choices and help from the field."""
    from ..data.long_format import LongFormatOptions

    table = parser.add_argument_group("long-format events")
    table.add_argument("--events", nargs="+", type=existing_table,
                       help="CSV or Parquet event table(s), one row per observation")
    for option in fields(LongFormatOptions):
        if option.name in skip:
            continue
        hint = LongFormatOptions.__annotations__[option.name]
        kind, choices = flag_type(hint) if option.name not in LONG_FORMAT_PARSERS else (None, None)
        table.add_argument(f"--{option.name}", type=LONG_FORMAT_PARSERS.get(option.name, kind), choices=choices,
                           default=option.default, help=option.metadata["help"].replace("%", "%%"))
    return table


# The encoder's MedFuseConfig fields settable from the command line, shared by the recipes so that a pretrained base
# and the fine-tuned model built on it can have the same architecture; unset ones keep the preset's value. Each flag's
# type, choices and help come from `MedFuseConfig` itself, so a bad value (`--fusion gated`) is refused with the
# others before any data loads.
ENCODER_FIELDS = ("hidden_size", "value_embedding_size", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size", "fusion", "time_embedding", "pooling", "hidden_dropout_prob",
                  "attention_probs_dropout_prob", "value_projector_hidden_size", "norm_first", "value_projector")
HEAD_FIELDS = ("classifier_dropout", "classification_loss", "focal_alpha", "focal_gamma")


def add_model_arguments(parser: argparse.ArgumentParser, fields: Sequence[str]) -> argparse._ArgumentGroup:
    """A `--<field>` flag for each `MedFuseConfig` field named, typed (and with its choices) from the config's
    annotations, its help the config docstring's first sentence of that field."""
    from ..configuration_medfuse import MedFuseConfig

    hints, docs = MedFuseConfig.__annotations__, config_field_docs(MedFuseConfig)
    model = parser.add_argument_group("model")
    for name in fields:
        kind, choices = flag_type(hints[name])
        model.add_argument(f"--{name}", type=kind, choices=choices, help=docs.get(name))
    return model


def flag_type(hint: object) -> tuple[Callable[[str], object], tuple | None]:
    """How a field's annotation is read from the command line: its type, and its choices for a `Literal`."""
    if get_origin(hint) is Literal:
        return str, get_args(hint)
    if hint is bool:
        return boolean, None
    kinds = set(get_args(hint)) - {type(None)} or {hint}
    return next(kind for kind in (float, int, str) if kind in kinds), None


def config_field_docs(config_class: type) -> dict[str, str]:
    """Each field's description in a transformers-style `Args:` docstring, first sentence only."""
    found = re.finditer(r"^ {8}(\w+) \(.*?\):\n((?: {12}.*\n?)+)", config_class.__doc__, re.MULTILINE)
    first_sentence = re.compile(r"\.\s+(?=[A-Z`])")  # not at "et al. 2022"
    return {name: first_sentence.split(" ".join(text.split()))[0].replace("%", "%%") for name, text in
            (match.groups() for match in found)}


def model_overrides(args: argparse.Namespace, fields: Sequence[str]) -> dict:
    """The config fields set on the command line."""
    return {name: getattr(args, name) for name in fields if getattr(args, name) is not None}


def add_training_arguments(parser: argparse.ArgumentParser, output_dir: str) -> argparse._ArgumentGroup:
    train = parser.add_argument_group("training")
    train.add_argument("--output_dir", default=output_dir, help="the run folder: model, metrics, checkpoints")
    train.add_argument("--max_events", type=positive_int, default=1024, help="most recent events kept per patient")
    train.add_argument("--value_normalization", choices=get_args(ValueNormalization), default="robust_zscore",
                       help="of a tokenizer fitted here: z-score within 3-IQR fences, or rank as a normal score")
    train.add_argument("--batch_size", type=positive_int, default=32, help="global batch size, split across processes")
    train.add_argument("--learning_rate", type=float, default=1e-3, help="AdamW's peak learning rate")
    train.add_argument("--weight_decay", type=float, default=0.01, help="AdamW's decoupled weight decay")
    train.add_argument("--num_epochs", type=non_negative_int, default=30,
                       help="passes over the training split at most (0: none, the start as it is)")
    train.add_argument("--max_steps", type=non_negative_int, default=0,
                       help="stop after this many optimizer steps (0: no limit; streamed shards: their --num_epochs "
                            "passes, counted from the shards' rows)")
    train.add_argument("--lr_scheduler", default="linear", help="any transformers scheduler name")
    train.add_argument("--warmup_ratio", type=float, default=0.05, help="share of the steps the rate warms up over")
    train.add_argument("--max_grad_norm", type=float, default=1.0, help="gradients clipped to this norm")
    train.add_argument("--gradient_accumulation_steps", type=positive_int, default=1,
                       help="batches per optimizer step")
    train.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default="no", help="autocast on a GPU")
    train.add_argument("--cpu", action="store_true", help="run on CPU even where a GPU is present")
    train.add_argument("--logging_steps", type=positive_int, default=10, help="optimizer steps between log lines")
    train.add_argument("--checkpoint_every_steps", type=non_negative_int, default=0, help="0: none by steps")
    train.add_argument("--checkpoint_every_epoch", action="store_true", help="a resumable checkpoint each epoch")
    train.add_argument("--resume_from_checkpoint", help="a checkpoint folder, or 'latest'")
    train.add_argument("--overwrite_output_dir", action="store_true",
                       help="start afresh in a folder that holds an earlier run, whose model, checkpoints, logs and "
                            "reports are removed first")
    train.add_argument("--min_patients_for_statistics", type=privacy_threshold, default=20,
                       help="published feature embeddings withhold statistics of features seen in fewer patients")
    train.add_argument("--drop_rare_features", action="store_true",
                       help="leave such features out of the published embeddings altogether, names included")
    return train
