"""Self-study: what a learner without an instructor relies on, for every registered problem.

- the course's two addresses live in `autograder/course_config.py` only: the student edition's,
  which every notebook's badge and setup cell are generated from (`autograder/notebook_template.py`),
  and this repository's, which nothing a student gets names;
- the setup cell installs only the course package where it is missing (Colab);
- each problem has a self-check that names the same likely cause as the grader, and a hint ladder
  of three steps that never gives away the solution's code;
- each student notebook of the student edition (`autograder publish`), filled in with the reference
  solution, runs from top to bottom in a fresh kernel (nbclient, the "python3" kernel of this
  environment) that imports the edition's package, with every check cell passing.
"""
from __future__ import annotations

import copy
import io
import re
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import nbformat
import pytest

from autograder import course_config, hints, notebook_template, problems
from autograder.notebook_code import cell_by_id, grade_id, read, strip_markers

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENTS = problems.ASSIGNMENTS


def source_path(assignment: str) -> Path:
    return REPO_ROOT / "solutions" / assignment / problems.get_spec(assignment).notebook


def release_path(assignment: str) -> Path:
    return REPO_ROOT / "notebooks" / assignment / problems.get_spec(assignment).notebook


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


# --- the course's address, in one place -------------------------------------------------------


def test_every_address_is_derived_from_the_student_repository_setting():
    owner_repo = course_config.github_path()
    assert course_config.STUDENT_REPOSITORY == f"https://github.com/{owner_repo}"
    assert course_config.colab_url("problem3") == (
        f"https://colab.research.google.com/github/{owner_repo}/blob/{course_config.STUDENT_BRANCH}"
        f"/notebooks/problem3/problem3.ipynb")
    assert course_config.pip_spec() == \
        f"git+{course_config.STUDENT_REPOSITORY}.git@{course_config.STUDENT_BRANCH}"
    # The private course repository is another one, and no link a student gets points at it.
    assert course_config.github_path(course_config.COURSE_REPOSITORY) != owner_repo
    # A fork passes its own address and branch, and nothing else has to change.
    fork = course_config.colab_url("problem5", repository="https://github.com/someone/fork.git", branch="dev")
    assert fork.endswith("/github/someone/fork/blob/dev/notebooks/problem5/problem5.ipynb")
    assert course_config.pip_spec("https://github.com/someone/fork", "dev") == \
        "git+https://github.com/someone/fork.git@dev"
    with pytest.raises(ValueError):
        course_config.github_path("https://gitlab.com/someone/fork")  # Colab opens GitHub notebooks only


def test_the_addresses_are_written_nowhere_but_course_config():
    """Notebooks carry the student edition's generated (checked below), and so do the source
    notebooks' paired .py files (tests/test_paired_sources.py); no code or doc may spell either
    address out by hand."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    spelled = []
    for name in tracked.stdout.split():
        path = REPO_ROOT / name
        if path.suffix in {".ipynb", ".png"} or name == "autograder/course_config.py" or not path.is_file():
            continue
        if path.suffix == ".py" and path.with_suffix(".ipynb").is_file():
            continue  # a notebook's text twin
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if any(course_config.github_path(r) in text
               for r in (course_config.STUDENT_REPOSITORY, course_config.COURSE_REPOSITORY)):
            spelled.append(name)
    assert not spelled, f"the repository address is spelled out in {spelled}: derive it from course_config"


# --- the template cells ------------------------------------------------------------------------


# Each source notebook follows the template: tests/test_notebooks.py.


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_student_notebook_opens_with_its_own_colab_badge(assignment):
    nb = read(release_path(assignment))
    first = nb.cells[0]
    assert first.cell_type == "markdown" and grade_id(first) == notebook_template.BADGE_ID
    assert f"({course_config.colab_url(assignment, release_path(assignment).name)})" in first.source
    assert cell_by_id(nb, notebook_template.SETUP_ID).source == notebook_template.setup_source()


def test_apply_repairs_a_notebook_and_then_leaves_it_alone():
    nb = read(source_path("problem3"))
    in_line = copy.deepcopy(nb)
    assert notebook_template.apply(in_line, "problem3") is False  # already in line: untouched
    broken = copy.deepcopy(nb)
    broken.cells.remove(cell_by_id(broken, notebook_template.BADGE_ID))
    cell_by_id(broken, "setup").source = 'COURSE_PIP_SPEC = "flash-attention-course"\n'
    broken.cells.insert(3, nbformat.v4.new_markdown_cell("[![Open In Colab](x)](an old address)"))
    broken.cells[3].metadata["nbgrader"] = dict(cell_by_id(nb, notebook_template.BADGE_ID).metadata.nbgrader)
    assert notebook_template.differences(broken, "problem3")
    assert notebook_template.apply(broken, "problem3") is True
    assert notebook_template.differences(broken, "problem3") == []
    assert [c.source for c in broken.cells] == [c.source for c in nb.cells]  # nothing else moved
    nbformat.validate(broken)
    assert notebook_template.apply(broken, "problem3") is False


def test_apply_refuses_a_notebook_without_a_setup_cell():
    nb = read(source_path("problem3"))
    nb.cells.remove(cell_by_id(nb, "setup"))
    with pytest.raises(ValueError, match="setup"):
        notebook_template.apply(nb, "problem3")


def test_setup_cell_installs_the_course_alone_and_only_the_missing_dependencies(monkeypatch, runtime):
    """As in Colab: the course package is missing and torch/triton/matplotlib are there. The cell
    must install the course without its dependencies (so pip leaves Colab's CUDA torch alone), add
    only what is missing, and then choose where kernels run."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    absent = {"autograder", "tqdm"}  # pretend: the course and one small dependency are missing
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in absent else real_find_spec(name, *a))
    commands = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: commands.append(list(cmd)))
    namespace = {}
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(notebook_template.setup_source(), "<setup cell>", "exec"), namespace)
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    assert commands == [pip + ["--no-deps", course_config.pip_spec()], pip + ["tqdm"]]
    assert namespace["runtime"] == runtime
    assert out.getvalue().startswith("Running on the ")


def test_setup_cell_installs_nothing_where_the_course_is_installed(monkeypatch):
    commands = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: commands.append(cmd))
    with redirect_stdout(io.StringIO()):
        exec(compile(notebook_template.setup_source(), "<setup cell>", "exec"), {})
    assert commands == []


def test_a_turing_gpu_runs_in_the_interpreter_and_says_why(monkeypatch):
    """A Colab T4 (compute capability 7.5): current Triton does not support it, so the course
    runs in the interpreter and tells the learner why and what to pick for GPU timings."""
    import torch

    from autograder import device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Tesla T4")
    usable, reason = device._gpu_status()
    assert not usable
    for words in ("Tesla T4", "7.5", "8.0 and newer", "interpreter", "float16"):
        assert words in reason
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (8, 9))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA L4")
    assert device._gpu_status()[0]


# --- self-checks and hints ---------------------------------------------------------------------


def solution_code_lines(assignment: str) -> list[str]:
    """The meaningful lines of the reference solution's student cell."""
    spec = problems.get_spec(assignment)
    code = strip_markers(cell_by_id(read(source_path(assignment)), spec.student_cell).source)
    return [line.strip() for line in code.splitlines()
            if len(line.strip()) > 24 and not line.strip().startswith(("#", '"""', "def ", "@", "return"))]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_hint_ladder_reveals_three_steps_one_at_a_time_and_never_the_code(assignment, monkeypatch):
    steps = problems.get_spec(assignment).hints
    assert len(steps) == 3 and all(isinstance(s, str) and len(s) > 40 for s in steps)
    monkeypatch.setattr(hints, "_revealed", {})
    shown = []
    for _ in range(4):  # the fourth run keeps showing the last step
        out = io.StringIO()
        with redirect_stdout(out):
            assert hints.hint(assignment) is None  # a hint cell shows the text once, not twice
        shown.append(out.getvalue())
    assert [s.split(":")[0] for s in shown] == ["Hint 1 (step 1 of 3)", "Hint 2 (step 2 of 3)",
                                                "The idea (step 3 of 3)", "The idea (step 3 of 3)"]
    for step, text in zip(steps + steps[-1:], shown, strict=True):
        assert step in text
    given_away = [line for line in solution_code_lines(assignment) if any(line in s for s in steps)]
    assert not given_away, f"hints quote the solution: {given_away}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_notebook_has_a_self_check_cell_and_a_hint_cell_after_the_students_cell(assignment):
    module = problems.get(assignment)
    for path in (source_path(assignment), release_path(assignment)):
        nb = read(path)
        cells = code_cells(nb)
        student = cells.index(cell_by_id(nb, module.SPEC.student_cell))
        hint_cells = [i for i, c in enumerate(cells) if re.search(rf"\bhint\(\s*[\"']{assignment}[\"']", c.source)]
        check_cells = [i for i, c in enumerate(cells)
                       if f"autograder.problems.{assignment}" in c.source and re.search(r"\bcheck\(", c.source)]
        assert hint_cells and check_cells, f"{path}: needs a hint({assignment!r}) cell and a check(...) cell"
        assert min(hint_cells + check_cells) > student
        for i in hint_cells + check_cells:  # learners' tools, not graded tests
            assert not cells[i].metadata.get("nbgrader", {}).get("grade", False)


def kernel_module(assignment: str, edits=()):
    """The problem's kernel cells as a module, the student cell as the solution after `edits`."""
    from autograder.kernel_module import import_kernel_module

    return import_kernel_module(problems.get_spec(assignment), read(source_path(assignment)), edits=edits,
                                name="selfstudy")


def self_check_arguments(module, kernels):
    """How a notebook calls `check`: a parameter named like one of the notebook's functions gets
    that function (check(online_softmax=..., tiled_attention=...), check(fn, launch_schedule=...)),
    a required one that names none gets the problem's kernel function."""
    import inspect

    args, kwargs = [], {}
    for name, parameter in inspect.signature(module.check).parameters.items():
        if hasattr(kernels, name):
            kwargs[name] = getattr(kernels, name)
        elif parameter.default is inspect.Parameter.empty:
            args.append(getattr(kernels, module.SPEC.kernel_function))
    return tuple(args), kwargs


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_self_check_names_the_graders_cause_for_a_typical_mistake(assignment):
    """The self-check is the grader's check on the visible shapes: a bundled mistake that those
    shapes show fails it with the cause the grade report names. (The first such mistake is enough:
    each is interpreted on the CPU, and each problem's tests cover its diagnoses.)"""
    from autograder.checks import CheckFailed
    from autograder.grading.samples import SAMPLES

    module = problems.get(assignment)
    mistakes = [s for s in SAMPLES[assignment] if s.edits and s.expected_cause and not s.extra_cell]
    assert mistakes, f"{assignment} bundles no kernel mistake to diagnose"
    for sample in mistakes:  # some mistakes only show on hidden shapes; the first visible one counts
        args, kwargs = self_check_arguments(module, kernel_module(assignment, sample.edits))
        out = io.StringIO()
        try:
            with redirect_stdout(out):
                module.check(*args, **kwargs)
        except CheckFailed as failed:
            assert f"likely cause ({sample.expected_cause})" in out.getvalue(), \
                f"{sample.name}: the self-check said\n{out.getvalue()}"
            assert "cases failed; first:" in str(failed)  # the verdict line the notebook shows
            return
    pytest.fail(f"the self-check of {assignment} catches none of {[s.name for s in mistakes]}")


# --- the whole student notebook, as a learner runs it ------------------------------------------

# The closing line of every check: "All 3 cases passed.", "All 1 schedules in the right order.", ...
VERDICT = re.compile(r"^All \d+ \w+", re.M)


def filled_in_student_notebook(assignment: str, release: Path | None = None):
    """The released notebook (this repository's, or `release`) with the reference solution in the
    student's cell (the "correct" sample)."""
    from autograder.grading.samples import SAMPLES, build_submission

    spec = problems.get_spec(assignment)
    correct = next(s for s in SAMPLES[assignment] if s.name == "correct")
    return build_submission(correct, read(source_path(assignment)), read(release or release_path(assignment)),
                            spec.student_cell, spec.kernel_cells[-1])


def text_of(cell, stream=None) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.output_type == "stream" and (stream is None or o.name == stream))


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_filled_in_student_notebook_runs_top_to_bottom(assignment, tmp_path, student_edition, monkeypatch):
    """Run from the student edition (`autograder publish`): its notebook, and its package as what
    the notebook imports, as a student who installed the edition has it."""
    from nbclient import NotebookClient

    spec = problems.get_spec(assignment)
    nb = filled_in_student_notebook(assignment, student_edition / "notebooks" / assignment / spec.notebook)
    monkeypatch.setenv("PYTHONPATH", str(student_edition))  # the kernel finds the edition's package first
    # Which Python ran it (the "python3" kernel must be this environment's own), and which package.
    probe = nbformat.v4.new_code_cell("import sys, autograder\nprint(sys.prefix)\nprint(autograder.__file__)")
    nb.cells.append(probe)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    elapsed = time.perf_counter() - start
    print(f"{assignment}: executed in {elapsed:.1f} s")

    errors = [f"{grade_id(c) or c.get('id')}: {o.ename}: {o.evalue}"
              for c in code_cells(nb) for o in c.outputs if o.output_type == "error"]
    assert not errors
    prefix, package = text_of(probe).split()
    assert prefix == sys.prefix
    assert Path(package).is_relative_to(student_edition), package

    graded = [c for c in code_cells(nb) if c.metadata.get("nbgrader", {}).get("grade")]
    # Graded cells that still hold code in the student's copy (hidden tests are left as comments).
    visible = [c for c in graded if any(line.strip() and not line.lstrip().startswith(("#", "from ", "import "))
                                        for line in c.source.splitlines())]
    checks = visible + [c for c in code_cells(nb) if f"autograder.problems.{assignment}" in c.source
                        and re.search(r"\bcheck\(", c.source)]
    assert visible
    for cell in checks:
        printed = text_of(cell)
        if grade_id(cell) == "test_performance":
            # The edition has no reference kernel to time against: the grader measures the points.
            assert "performance points are measured when your notebook is graded" in printed, printed
            continue
        assert VERDICT.search(printed) and re.search(r"^PASS ", printed, re.M), f"{grade_id(cell)}:\n{printed}"
        assert not re.search(r"^FAIL ", printed, re.M)
    for cell in graded:  # nbgrader gives zero points to a graded cell that writes to stderr
        assert not text_of(cell, "stderr"), f"{grade_id(cell)} wrote to stderr"
    # Every picture the chapter draws was rendered.
    for cell in code_cells(nb):
        if "autograder.plots" in cell.source:
            assert any("image/png" in o.get("data", {}) for o in cell.outputs), f"{grade_id(cell)} drew nothing"
    hint_cell = next(c for c in code_cells(nb) if re.search(rf"\bhint\(\s*[\"']{assignment}", c.source))
    assert text_of(hint_cell).startswith("Hint 1 (step 1 of 3)")


@pytest.mark.slow
def test_capstone_chapter_trains_with_the_learners_problem7_from_the_edition(tmp_path, student_edition, monkeypatch):
    """The capstone from the student edition, which has no reference kernels: it takes the learner's
    solved problem 7 notebook from the folder next to its own, checks it, and trains with it."""
    from nbclient import NotebookClient

    spec = problems.get_spec("problem7")
    solved = filled_in_student_notebook("problem7", student_edition / "notebooks" / "problem7" / spec.notebook)
    (tmp_path / "problem7").mkdir()
    nbformat.write(solved, str(tmp_path / "problem7" / spec.notebook))
    (tmp_path / "capstone").mkdir()
    nb = read(student_edition / "notebooks" / "capstone" / "capstone.ipynb")
    monkeypatch.setenv("PYTHONPATH", str(student_edition))
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path / "capstone")}}).execute()
    print(f"capstone: executed in {time.perf_counter() - start:.1f} s")
    errors = [f"{c.get('id')}: {o.ename}: {o.evalue}" for c in code_cells(nb) for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    printed = "\n".join(text_of(c) for c in code_cells(nb))
    assert "the course backend runs your problem 7 notebook (../problem7/problem7.ipynb)" in printed
    assert "course vs sdpa:" in printed and "within the tolerance" in printed
    assert any("image/png" in o.get("data", {}) for c in code_cells(nb) for o in c.outputs)  # the loss curves
