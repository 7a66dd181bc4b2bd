"""What a regular (non-editable) install ships (setuptools copies only Python files unless told otherwise), and the
code's one layout rule that a formatter is configured to agree with."""

import tomllib
from pathlib import Path

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
