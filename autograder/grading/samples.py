"""Sample submissions, built from the source notebook so they can never drift from it.

Each sample is the student release notebook with the student's cell filled in by the
reference solution, after one small, typical edit (or with a cell added after the kernel).
"""
from __future__ import annotations

import copy
import importlib
from pathlib import Path

import nbformat

from .. import problems
from ..kernel_module import apply_edits, import_kernel_module
from ..notebook_code import cell_by_id, read, strip_markers
from .sample import Sample, expected_score

__all__ = ["ADVERSARIAL", "GPU_FAULTS", "PERFORMANCE", "SAMPLES", "Sample", "apply_edits", "build_submission",
           "expected_score", "sample_kernel_function", "write_samples"]


def _sample_sets(attribute: str) -> dict:
    """{assignment: samples} from sample_sets/<assignment>.py; a set a problem does not define is empty."""
    found = {}
    for assignment in problems.ASSIGNMENTS:
        module = importlib.import_module(f"{__package__}.sample_sets.{assignment}")
        found[assignment] = tuple(getattr(module, attribute, ()))
    return found


SAMPLES = _sample_sets("SAMPLES")
# Submissions that misbehave as submissions: crash, exit, loop, tamper, arrive broken.
ADVERSARIAL = _sample_sets("ADVERSARIAL")
# Faults only a GPU can have. Graded by the GPU-marked tests on a GPU runner.
GPU_FAULTS = _sample_sets("GPU_FAULTS")
# Right kernels that ask more of a GPU than the reference: they lose performance points only.
PERFORMANCE = _sample_sets("PERFORMANCE")


def build_submission(sample: Sample, source_nb, release_nb, student_cell: str, kernel_cell: str):
    """The release notebook as this sample's student would hand it in."""
    nb = copy.deepcopy(release_nb)
    if not sample.untouched:
        solution = strip_markers(cell_by_id(source_nb, student_cell).source)
        cell_by_id(nb, student_cell).source = apply_edits(solution, sample.edits)
    if sample.answer_suffix:
        cell_by_id(nb, student_cell).source += "\n" + sample.answer_suffix
    added = [code for code in (sample.extra_cell, *sample.extra_cells) if code]
    index = nb.cells.index(cell_by_id(nb, kernel_cell)) + 1
    for i, code in enumerate(added):
        extra = nbformat.v4.new_code_cell(code.strip("\n"))
        extra.id = f"student-added-{sample.name}".replace("_", "-") + (f"-{i}" if i else "")
        nb.cells.insert(index + i, extra)
    for gid, new_source in sample.locked_edits:
        cell = cell_by_id(nb, gid)
        if new_source is None:
            nb.cells.remove(cell)
        else:
            cell.source = new_source
    if sample.kernelspec:
        nb.metadata["kernelspec"] = {"name": sample.kernelspec, "display_name": sample.kernelspec,
                                     "language": sample.kernelspec.split("-")[0]}
    return nb


def write_samples(assignment: str, source_path: Path, release_path: Path, submitted_dir: Path,
                  student_cell: str, kernel_cell: str, samples=None) -> list[Sample]:
    """Write submitted/<sample name>/<assignment>/<notebook> for each sample (default: the usual set)."""
    source_nb, release_nb = read(source_path), read(release_path)
    samples = SAMPLES[assignment] if samples is None else samples
    for sample in samples:
        folder = submitted_dir / sample.name / assignment
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / (sample.filename or release_path.name)
        if sample.missing:
            continue
        if sample.raw is not None:
            target.write_text(sample.raw)
            continue
        nbformat.write(build_submission(sample, source_nb, release_nb, student_cell, kernel_cell), str(target))
    return list(samples)


def sample_kernel_function(assignment: str, sample: Sample, repo_root: Path | None = None):
    """The graded function of a sample whose mistake is in its code (edits, an untouched answer
    cell, an extra cell), imported in this process: for in-process checks and timings."""
    spec = problems.get_spec(assignment)
    root = Path(repo_root) if repo_root else Path(__file__).resolve().parents[2]
    source = read(root / "solutions" / assignment / spec.notebook)
    if sample.untouched:
        release = read(root / "notebooks" / assignment / spec.notebook)
        answer = cell_by_id(release, spec.student_cell).source
    else:
        answer = apply_edits(strip_markers(cell_by_id(source, spec.student_cell).source), sample.edits) \
            + sample.answer_suffix
    module = import_kernel_module(spec, source, answer=answer, extra_cells=(sample.extra_cell, *sample.extra_cells),
                                  name=f"sample_{sample.name}")
    return getattr(module, spec.kernel_function)
