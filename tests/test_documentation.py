"""The commands and files the README, RESULTS and the cards give a reader exist: every flag they pass a recipe or a
benchmark is one its parser declares, and every repository path they name is there. Documentation drifts silently:
a renamed flag or a moved file fails only for the reader who copies the command."""

import argparse
import functools
import glob
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, load_script

DOCUMENTS = [ROOT / "README.md", ROOT / "benchmarks" / "RESULTS.md",
             *sorted(ROOT.glob("model_cards/**/*.md")), *sorted(ROOT.glob("benchmarks/results/**/*.md"))]
SCRIPT = re.compile(r"\b(?:recipes|benchmarks)/\w+\.py\b")
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9_]*)")
# A path in the repository: a tracked folder, then what follows up to a space, quote or bracket, whole (a brace
# list, `run{1,2,3}.txt`, is left out). Run outputs (outputs/...) are the commands' to make.
REPOSITORY_PATH = re.compile(
    r"(?<![\w./-])(?:recipes|benchmarks|model_cards|medfuse_hf|tests|\.ci)/[\w./*-]*[\w*](?![\w{/*-])")


class _Parsed(Exception):
    """Raised in place of parsing: carries the parser a script's `main` built."""


def commands(text: str) -> Iterator[tuple[int, str]]:
    """(line number, command) of a Markdown text: each command of a fenced block (backslash continuations joined;
    `&&`, `;` and pipes split a line), each row of a table (a recipe's row names its flags in other cells), and each
    inline code span elsewhere."""
    in_block, continued = False, None
    for number, line in enumerate(text.split("\n"), start=1):
        if line.lstrip().startswith("```"):
            in_block = not in_block
        elif in_block:
            start, joined = continued or (number, "")
            joined += " " + line.rstrip("\\")
            continued = (start, joined) if line.endswith("\\") else None
            if continued is None:
                yield from ((start, command) for command in re.split(r"&&|;|\|", joined))
        elif line.startswith("|"):
            yield number, line
        else:
            yield from ((number, span) for span in re.findall(r"`([^`]+)`", line))


@functools.cache
def declared_flags(script: str) -> frozenset[str]:
    """The flags `script`'s parser declares, read by running its `main` up to the parse and no further; a script
    that parses no arguments declares none (and is not run)."""
    if not re.search(r"parse_args|parse_known_args|parse_with_config", (ROOT / script).read_text()):
        return frozenset()
    module = load_script(script)

    def capture(parser: argparse.ArgumentParser, *args, **kwargs):
        raise _Parsed(parser)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
        with pytest.raises(_Parsed) as parsed:
            module.main()
    return frozenset(option[2:] for action in parsed.value.args[0]._actions for option in action.option_strings)


def undeclared_flags(path: Path, text: str) -> list[str]:
    """`file:line: script --flag` for each flag a command passes that its script does not declare. Flags before the
    script's name belong to its launcher (`accelerate launch --multi_gpu`)."""
    found = []
    for number, command in commands(text):
        if script := SCRIPT.search(command):
            found += [f"{path.name}:{number}: {script.group()} --{flag}"
                      for flag in FLAG.findall(command[script.end():]) if flag not in declared_flags(script.group())]
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_flag_a_document_passes_a_script_is_one_it_declares(document):
    assert undeclared_flags(document, document.read_text()) == []


def test_a_renamed_flag_is_caught_in_a_block_a_table_and_a_span():
    text = ("```\npython recipes/finetune.py --init_from base \\\n  --stratgy lp-ft && recipes/predict.py --output x\n"
            "```\n| `recipes/finetune.py` | `--train_fraction`, `--train_fracton` |\n"
            "Run `accelerate launch --multi_gpu recipes/pretrain.py --max_epochs 5`.\n")
    assert undeclared_flags(Path("GUIDE.md"), text) == [
        "GUIDE.md:2: recipes/finetune.py --stratgy", "GUIDE.md:5: recipes/finetune.py --train_fracton",
        "GUIDE.md:6: recipes/pretrain.py --max_epochs"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_repository_path_a_document_names_exists(document):
    missing = [f"{number}: {path}" for number, line in enumerate(document.read_text().split("\n"), start=1)
               for path in REPOSITORY_PATH.findall(line)
               if not glob.glob(str(ROOT / path))]
    assert missing == []
