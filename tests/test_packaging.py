"""What a regular (non-editable) install ships (setuptools copies only Python files unless told otherwise), and the
code's one layout rule that a formatter is configured to agree with, and the versions of the stack."""

import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def test_every_data_file_the_package_reads_is_declared_for_installation():
    """An undeclared file works in a checkout and is missing after `pip install` (the model card template was)."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {
        path
        for package, patterns in declared.items()
        for pattern in patterns
        for path in ROOT.joinpath(*package.split(".")).glob(pattern)
    }
    data_files = {
        path for path in (ROOT / "medfuse_hf").rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    }
    assert data_files, "the package has data files (template, bundled sample): the search found none"
    assert data_files <= shipped, ("not declared in pyproject.toml [tool.setuptools.package-data]: "
                                   f"{sorted(data_files - shipped)}")


def test_no_line_is_longer_than_the_configured_limit():
    """`[tool.ruff] line-length` (transformers' 119) holds for every Python file, so `ruff check` and the code agree;
    checked here because CI installs no linter."""
    limit = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["line-length"]
    sources = [path for folder in ("medfuse_hf", "recipes", "benchmarks", "tests")
               for path in (ROOT / folder).rglob("*.py")]
    too_long = [f"{path.relative_to(ROOT)}:{number}" for path in sources
                for number, line in enumerate(path.read_text().splitlines(), 1) if len(line) > limit]
    assert len(sources) > 50 and not too_long, too_long


def declared_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"] + project["optional-dependencies"]["test"]]


def test_the_installed_stack_meets_the_lower_bounds_and_the_constraints_pin_each_package():
    """pyproject.toml keeps lower bounds only (users get the newest releases); constraints.txt pins the versions the
    suite last passed on, for reproducible benchmark figures. The versions this run tested are printed at its end
    (conftest.py)."""
    pinned = {canonicalize_name(line.split("==")[0]): Version(line.split("==")[1].split(";")[0].strip())
              for line in (ROOT / "constraints.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    for requirement in declared_requirements():
        name = canonicalize_name(requirement.name)
        assert Version(version(requirement.name)) in requirement.specifier, (requirement, version(requirement.name))
        assert name in pinned and pinned[name] in requirement.specifier, (requirement, pinned.get(name))
