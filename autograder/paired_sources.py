"""The text twins of the source notebooks.

Each source notebook `solutions/<problem>/<problem>.ipynb` is paired with a py:percent file next
to it, `<problem>.py` (jupytext; `solutions/jupytext.toml` pairs them): the same cells, cell types
and nbgrader metadata (grade ids, solution/locked/grade flags, points), without outputs. The text
file is what a reader diffs, a linter parses and a duplicate-code finder sees; the notebook is
what nbgrader releases and grades, and what the package imports the reference kernels from.
nbgrader never copies the text file anywhere (`CourseDirectory.ignore` in nbgrader_config.py).

`first_difference` says where a pair disagrees; `sync` brings a pair in line. Needs jupytext
(the instructor extra).
"""
from __future__ import annotations

from itertools import zip_longest
from pathlib import Path

from .notebook_code import grade_id, read

FORMAT = "py:percent"
# What must agree cell by cell, in this order.
COMPARED = (("cell type", lambda c: c.cell_type), ("source", lambda c: c.source),
            ("nbgrader metadata", lambda c: c.get("metadata", {}).get("nbgrader")))
DIRECTIONS = ("newer", "notebook", "text")


def _jupytext():
    try:
        import jupytext
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the paired sources need jupytext: pip install -e '.[instructor]'") from exc
    return jupytext


def text_path(notebook) -> Path:
    """The paired text file of a source notebook."""
    return Path(notebook).with_suffix(".py")


def source_notebooks(repo_root, assignments=None) -> list[Path]:
    """The source notebooks under solutions/ (of the given assignments only, when named)."""
    folders = [Path(repo_root) / "solutions" / a for a in assignments] if assignments else \
        sorted(p for p in (Path(repo_root) / "solutions").iterdir() if p.is_dir())
    return [nb for folder in folders for nb in sorted(folder.glob("*.ipynb"))]


def describe(cell, index: int) -> str:
    gid = grade_id(cell)
    if gid:
        return f"cell {index} (grade id {gid!r})"
    first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")
    return f"cell {index} (no grade id, {cell.cell_type}: {first[:50]!r})"


def first_difference(notebook) -> str | None:
    """None when the notebook and its text file agree; else the first thing that differs, naming
    the cell by its grade id."""
    notebook = Path(notebook)
    text = text_path(notebook)
    if not text.exists():
        return f"{text.name} is missing"
    nb = read(notebook)
    paired = _jupytext().read(str(text), fmt=FORMAT)
    for index, (cell, twin) in enumerate(zip_longest(nb.cells, paired.cells)):
        if twin is None:
            return f"{describe(cell, index)} of {notebook.name} is missing from {text.name}"
        if cell is None:
            return f"{describe(twin, index)} of {text.name} is not in {notebook.name}"
        for what, get in COMPARED:
            if get(cell) != get(twin):
                return f"{describe(cell, index)} differs in its {what}: " + _first_change(
                    get(cell), get(twin), notebook.name, text.name)
    return None


def _first_change(ours, theirs, our_name, their_name) -> str:
    if isinstance(ours, str) and isinstance(theirs, str):
        lines, twins = ours.splitlines(), theirs.splitlines()
        for number, (line, twin) in enumerate(zip_longest(lines, twins), start=1):
            if line != twin:
                return f"line {number} is {line!r:.100} in {our_name}, {twin!r:.100} in {their_name}"
    if isinstance(ours, dict) and isinstance(theirs, dict):
        keys = sorted(k for k in set(ours) | set(theirs) if ours.get(k, "absent") != theirs.get(k, "absent"))
        return ", ".join(f"{k} is {ours.get(k, 'absent')!r} in {our_name}, {theirs.get(k, 'absent')!r} in "
                         f"{their_name}" for k in keys)
    return f"{ours!r:.100} in {our_name}, {theirs!r:.100} in {their_name}"


def sync(notebook, source: str = "newer") -> None:
    """Bring the notebook and its text file in line.

    source="newer": jupytext's --sync, the more recently modified file gives the cells;
    "notebook": rewrite the text file from the notebook; "text": update the notebook's cells from
    the text file. The notebook keeps its outputs, cell ids and notebook metadata either way.
    """
    from jupytext.cli import jupytext as jupytext_cli

    _jupytext()
    notebook = Path(notebook)
    if source == "newer":
        args = ["--sync", str(notebook)]
    elif source == "notebook":
        args = ["--to", FORMAT, "--output", str(text_path(notebook)), str(notebook)]
    elif source == "text":
        args = ["--to", "ipynb", "--update", "--output", str(notebook), str(text_path(notebook))]
    else:
        raise ValueError(f"source must be one of {DIRECTIONS}, got {source!r}")
    jupytext_cli(["--quiet", *args])
