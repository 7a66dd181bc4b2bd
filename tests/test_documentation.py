"""The commands and files the README, RESULTS and the cards give a reader exist: every flag a command passes to one
of the project's scripts (after its name, in the same command, table row or code span) is one its parser declares,
and every repository path they name is there. Documentation drifts silently: a renamed flag or a moved file fails
only for the reader who copies the command."""

import argparse
import functools
import glob
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import datasets
import pytest
import transformers
from conftest import ROOT, load_script

DOCUMENTS = [ROOT / "README.md", ROOT / "benchmarks" / "RESULTS.md",
             *sorted(ROOT.glob("model_cards/**/*.md")), *sorted(ROOT.glob("benchmarks/results/**/*.md"))]
SCRIPT_FOLDERS = ("recipes", "benchmarks")
SCRIPT = re.compile(rf"(?:(?:{'|'.join(SCRIPT_FOLDERS)})/)?(\w+)\.py")  # written with its folder or without
FLAG = re.compile(r"--([a-z][a-z0-9_]*)(?:=.*)?")  # a token that is a flag; a quoted "--a 1 --b" is a pass-through
OPERATORS = {"&&", "||", "|", ";", "&"}
ASSIGNMENT = re.compile(r"\s*(?:export\s+)?(\w+)=(\"[^\"]*\"|'[^']*'|\S*)\s*")  # a line that only sets a variable
# A path in the repository: a tracked folder, then what follows up to a space, quote or bracket, whole (a brace
# list, `run{1,2,3}.txt`, is checked up to its folder). Run outputs (outputs/...) are the commands' to make.
REPOSITORY_PATH = re.compile(
    r"(?<![\w./-])(?:recipes|benchmarks|model_cards|medfuse_hf|tests|\.ci)/[\w./*-]*[\w*/](?![\w{*-])")


class _Parsed(Exception):
    """Raised in place of parsing: carries the parser a script's `main` built."""


def words_of(text: str) -> list[str]:
    """A line of shell as its words, quotes kept: a quoted `';'` or pass-through `"--num_epochs 1"` stays one word,
    and `&&`, `;` and pipes are words of their own."""
    try:
        lexer = shlex.shlex(text, posix=False, punctuation_chars=True)
        lexer.whitespace_split = True
        return list(lexer)
    except ValueError:  # an unbalanced quote: prose's apostrophe
        return text.split()


def shell_commands(text: str) -> Iterator[list[str]]:
    """The commands of a line of shell, each as its words, split at `&&`, `;` and pipes."""
    command: list[str] = []
    for word in [*words_of(text), ";"]:
        if word in OPERATORS:
            yield command
            command = []
        else:
            command.append(word)


def fenced_commands(lines: list[tuple[int, str]]) -> Iterator[tuple[int, list[str]]]:
    """A fenced block's commands: backslash continuations and quotes across lines joined, and a variable set in the
    block (`EXPORT="--events ..."`) read where it is used."""
    variables, start, joined = {}, None, ""
    for number, line in lines:
        start, joined = start or number, joined + " " + line.removesuffix("\\")
        if line.endswith("\\") or joined.count('"') % 2:
            continue
        if assignment := ASSIGNMENT.fullmatch(joined):
            variables[assignment.group(1)] = assignment.group(2).strip("\"'")
        else:
            for name, value in variables.items():
                joined = re.sub(rf"\$(?:{name}\b|{{{name}}})", lambda _: value, joined)
            yield from ((start, command) for command in shell_commands(joined))
        start, joined = None, ""


def commands(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, words) of each command a Markdown text gives: the commands of its fenced blocks, each table row's
    code spans read together (a recipe's row names its flags in other cells), and each inline code span of its
    paragraphs (a span may wrap onto the next line)."""
    lines = list(enumerate(text.split("\n"), start=1))
    block, paragraph = None, []
    for number, line in [*lines, (len(lines) + 1, "")]:
        if block is None and (not line.strip() or line.lstrip().startswith(("```", "|"))) and paragraph:
            prose = "\n".join(written for _, written in paragraph)
            for span in re.finditer(r"`([^`]+)`", prose):
                at = paragraph[0][0] + prose.count("\n", 0, span.start())
                yield from ((at, command) for command in shell_commands(span.group(1).replace("\n", " ")))
            paragraph = []
        if line.lstrip().startswith("```"):
            if block:
                yield from fenced_commands(block)
            block = None if block is not None else []
        elif block is not None:
            block.append((number, line))
        elif line.startswith("|"):
            yield number, words_of(" ".join(re.findall(r"`([^`]+)`", line.replace("\\|", " "))))
        elif line.strip():
            paragraph.append((number, line))


def script_of(word: str) -> str | None:
    """The project script a word names (`recipes/finetune.py`, or `finetune.py` alone), as a path from the root;
    None for any other word."""
    if not (named := SCRIPT.fullmatch(word.strip("\"'"))):
        return None
    return next((f"{folder}/{named.group(1)}.py" for folder in SCRIPT_FOLDERS
                 if (ROOT / folder / f"{named.group(1)}.py").exists()), None)


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
        patch.setattr(datasets, "disable_progress_bars", lambda: None)  # a main quiets its own process's bars,
        patch.setattr(transformers.utils.logging, "disable_progress_bar", lambda: None)  # not this test worker's
        with pytest.raises(_Parsed) as parsed:
            module.main()
    return frozenset(option[2:] for action in parsed.value.args[0]._actions for option in action.option_strings)


def undeclared_flags(path: Path, text: str) -> list[str]:
    """`file:line: script --flag` for each flag a command passes that its script does not declare. Flags before the
    script's name belong to its launcher (`accelerate launch --multi_gpu`)."""
    found = []
    for number, words in commands(text):
        at, script = next(((i, script) for i, word in enumerate(words) if (script := script_of(word))), (0, None))
        if script is None:
            continue
        found += [f"{path.name}:{number}: {script} --{flag.group(1)}" for word in words[at + 1:]
                  if (flag := FLAG.fullmatch(word)) and flag.group(1) not in declared_flags(script)]
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_flag_a_document_passes_a_script_is_one_it_declares(document):
    assert undeclared_flags(document, document.read_text()) == []


def test_a_renamed_flag_is_caught_wherever_a_command_is_written():
    text = ("```\n"
            "EXPORT=\"--events export.csv\n  --feture_map map.csv\"\n"
            "python recipes/finetune.py --init_from base \\\n"
            "  --stratgy lp-ft && recipes/predict.py --output x $EXPORT\n"
            "python recipes/make_pretraining_corpus.py --delimiter ';' --labls y.csv\n"
            "OMP_NUM_THREADS=1 python benchmarks/p12_table.py --extra_args \"--not_a_p12_table_flag 1\" --sed 0\n"
            "```\n"
            "| `recipes/finetune.py` | `--train_fraction`, `--train_fracton` |\n"
            "Run `accelerate launch --multi_gpu recipes/pretrain.py --max_epochs 5`, then\n"
            "`finetune.py --init_from base\n--lpft_rate 0.1`.\n")
    assert undeclared_flags(Path("GUIDE.md"), text) == [
        "GUIDE.md:4: recipes/finetune.py --stratgy", "GUIDE.md:4: recipes/predict.py --feture_map",
        "GUIDE.md:6: recipes/make_pretraining_corpus.py --labls",
        "GUIDE.md:7: benchmarks/p12_table.py --sed", "GUIDE.md:9: recipes/finetune.py --train_fracton",
        "GUIDE.md:10: recipes/pretrain.py --max_epochs", "GUIDE.md:11: recipes/finetune.py --lpft_rate"]


def test_a_missing_folder_is_caught_with_or_without_its_trailing_slash():
    assert REPOSITORY_PATH.findall("see `recipes/nope/` and recipes/configs/ and benchmarks/results/run{1,2}.txt") == [
        "recipes/nope/", "recipes/configs/", "benchmarks/results"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_repository_path_a_document_names_exists(document):
    missing = [f"{number}: {path}" for number, line in enumerate(document.read_text().split("\n"), start=1)
               for path in REPOSITORY_PATH.findall(line)
               if not glob.glob(str(ROOT / path))]
    assert missing == []
