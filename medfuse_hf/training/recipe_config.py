"""Recipe settings from flags and an optional YAML file: the file sets defaults, flags on the command line win."""

import argparse
from pathlib import Path

import yaml


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse `argv`; keys of the `--config` YAML become defaults. Unknown keys are an error naming the file."""
    parser.add_argument("--config", type=Path, help="YAML file of flag values, e.g. recipes/configs/p12.yaml")
    first, _ = parser.parse_known_args(argv)
    if first.config is not None:
        values = yaml.safe_load(first.config.read_text()) or {}
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SystemExit(f"{first.config}: unknown settings {unknown}; the recipe accepts {sorted(known - {'help', 'config'})}")
        parser.set_defaults(**values)
    return parser.parse_args(argv)
