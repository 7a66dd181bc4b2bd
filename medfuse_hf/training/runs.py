"""Running a recipe (`recipes/finetune.py`, `recipes/pretrain.py`) as a child process: what experiment drivers
(transfer, benchmark tables) repeat.

A child process per run keeps each run's memory separate, lets a launcher (`accelerate launch ...`) spread it over
GPUs, and makes a run killed half-way resumable: it always asks for `--resume_from_checkpoint latest`, which starts
fresh when the run has no checkpoint yet.
"""

import json
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def run_recipe(recipe: str, flags: list[str], output_dir: Path, launcher: str = shlex.quote(sys.executable)) -> Path:
    """Run `recipes/<recipe>` to completion, resuming it if it was killed; returns its output folder. Its output goes
    to `<output_dir>/run.log` (appended across resumptions), whose tail is raised with the error if the run fails."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    command = [*shlex.split(launcher), str(RECIPES / recipe), *flags, "--output_dir", str(output_dir),
               "--checkpoint_every_epoch", "--resume_from_checkpoint", "latest"]
    log_path = output_dir / "run.log"
    with log_path.open("a") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        returncode = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    if returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"{shlex.join(command)} failed (exit {returncode}); end of {log_path}:\n{tail}")
    return output_dir


def run_finetune(flags: list[str], output_dir: Path, launcher: str = shlex.quote(sys.executable)) -> dict:
    """Run one fine-tuning to completion and return its `test_metrics.json`."""
    return json.loads((run_recipe("finetune.py", flags, output_dir, launcher) / "test_metrics.json").read_text())


class ResultRows:
    """An experiment's results as a JSON list that grows one finished run at a time, so an interrupted experiment
    resumes where it stopped: cells (the `key` fields of a row) already there are not run again."""

    def __init__(self, path: Path, key: tuple[str, ...]):
        self.path, self.key = Path(path), key
        self.rows: list[dict] = json.loads(self.path.read_text()) if self.path.exists() else []

    def done(self, **cell) -> bool:
        return any(all(row[name] == cell[name] for name in self.key) for row in self.rows)

    def add(self, row: dict) -> None:
        """Append a finished run. Rows written to the file since it was read (an import, or a second driver on other
        cells) are kept: the file is read again first, and the row replaces a copy of its own cell, in its place."""
        on_disk = json.loads(self.path.read_text()) if self.path.exists() else []
        cell = self._cell(row)
        places = [index for index, kept in enumerate(on_disk) if self._cell(kept) == cell]
        self.rows = [kept for kept in on_disk if self._cell(kept) != cell]
        self.rows.insert(places[0] if places else len(self.rows), row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")  # readers never see a half-written file
        partial.write_text(json.dumps(self.rows, indent=1) + "\n")
        partial.replace(self.path)

    def _cell(self, row: dict) -> list:
        return [row.get(name) for name in self.key]

    def fill(self, cells: Iterable[dict], run: Callable[[dict], dict],
             say: Callable[[dict], str] | None = None) -> None:
        """Measure every cell (the `key` fields) not measured yet, in order, appending each row as soon as it is done
        and printing `say(row)`: the loop of every experiment driver."""
        for cell in cells:
            if self.done(**cell):
                continue
            row = run(cell)
            self.add(row)
            if say is not None:
                print(say(row), flush=True)
