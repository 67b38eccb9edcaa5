"""Look at a submission before nbgrader does: what is missing, renamed, broken or tampered with.

Nothing here changes what the student handed in. A notebook under another name is copied
to the expected name (the original stays), so that it can be graded, and the copy is noted.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat

from ..notebook_code import grade_id


def _locked_cells(nb) -> dict:
    return {grade_id(c): c.source for c in nb.cells
            if grade_id(c) and c.get("metadata", {}).get("nbgrader", {}).get("locked")}


def inspect_submission(folder: Path, notebook: str, release_nb) -> tuple[list[str], bool]:
    """Return (notes, gradable) for submitted/<student>/<assignment>/ `folder`."""
    notes = []
    expected = folder / f"{notebook}.ipynb"
    if not expected.exists():
        others = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
        if len(others) == 1:
            shutil.copy(others[0], expected)
            notes.append(f"notebook was named {others[0].name}; graded it as {expected.name}")
        elif others:
            found = ", ".join(p.name for p in others)
            return [f"no {expected.name}; found {found} and cannot tell which to grade"], False
        else:
            return [f"no notebook submitted (expected {expected.name})"], False
    try:
        text = expected.read_text()
        json.loads(text)
        nb = nbformat.reads(text, as_version=4)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and nbformat's NotJSONError
        return [f"{expected.name} is not a readable notebook ({type(exc).__name__}: {str(exc)[:120]})"], False

    kernel = nb.metadata.get("kernelspec", {}).get("name")
    if kernel and kernel != "python3":
        notes.append(f"notebook asks for kernel {kernel!r}; graded with the course's Python kernel")
    released, submitted = _locked_cells(release_nb), {grade_id(c): c.source for c in nb.cells if grade_id(c)}
    deleted = [gid for gid in released if gid not in submitted]
    edited = [gid for gid in released if gid in submitted and submitted[gid] != released[gid]]
    if edited:
        notes.append("locked cells edited (nbgrader restores them before grading): " + ", ".join(edited))
    if deleted:
        notes.append("locked cells deleted (their tests score 0): " + ", ".join(deleted))
    return notes, True
