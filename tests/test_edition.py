"""The student edition (`autograder publish`) holds no solution, no hidden test and no grading.

What is secret: every line between `### BEGIN SOLUTION` and `### END SOLUTION` and between
`### BEGIN HIDDEN TESTS` and `### END HIDDEN TESTS` of every source notebook. A reference kernel's
secret part is exactly its solution region: the rest of its cell is released as locked code, and
later problems release earlier problems' finished kernels as given code, so a line that any student
notebook shows is public. Trivial lines (blank, `pass`, comments, brackets, very short statements
such as `m = m_new`) prove nothing and are not searched for.

The notebooks themselves are run from the edition by tests/test_selfstudy.py (the slow test that
runs every filled-in student notebook), so the edition's package is what they import.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from autograder import course_config, edition, problems

REPO_ROOT = Path(__file__).resolve().parent.parent
MIN_SECRET_CHARS = 12  # shorter lines (`m = m_new`, `return o, lse`) are no evidence of a leak


def _normalise(line: str) -> str:
    return " ".join(line.split())


# Solution lines that restate what every student notebook gives in words, each with where.
GIVEN = {
    "scale = 1.0 / math.sqrt(q.shape[-1])": "the softmax scale 1/sqrt(D), stated in every chapter",
    "group = n_q_heads // n_kv_heads": "problem 5's docstring: runs of n_q_heads // n_kv_heads query heads",
}


def _trivial(line: str) -> bool:
    """Blank, `pass`, comments, brackets, short lines, a call's opening line, reading a shape, and
    lines that neither assign nor call (`if is_causal:`, `return o, lse`): any attention code has them."""
    return (len(line) < MIN_SECRET_CHARS or line.startswith("#") or line == "pass"
            or not re.search(r"[A-Za-z0-9]", line) or not re.search(r"[=(]", line)
            or line.endswith(("[", "(", "{", ","))
            or re.fullmatch(r"[\w, ]+ = \w+\.shape(\[-?\d\])?", line) is not None
            or line.split(" #")[0].strip() in GIVEN)


def _regions(source_nb):
    """(secret lines, lines outside any region) of one source notebook."""
    secret, public, inside = [], set(), False
    for cell in source_nb.cells:
        for raw in cell.source.splitlines():
            line = _normalise(raw)
            if line.startswith("### BEGIN SOLUTION") or line.startswith("### BEGIN HIDDEN TESTS"):
                inside = True
            elif line.startswith("### END SOLUTION") or line.startswith("### END HIDDEN TESTS"):
                inside = False
            elif inside:
                secret.append(line)
            else:
                public.add(line)
    return secret, public


def secret_lines(repo: Path = REPO_ROOT) -> dict[str, str]:
    """{line: problem} for every non-trivial solution or hidden-test line that no student notebook shows."""
    public: set[str] = set()
    for released in repo.glob("notebooks/*/*.ipynb"):
        for cell in nbformat.read(str(released), as_version=4).cells:
            public.update(_normalise(line) for line in cell.source.splitlines())
    found: dict[str, str] = {}
    for assignment in problems.ASSIGNMENTS:
        source = problems.source_notebook_path(assignment, repo)
        secret, outside = _regions(nbformat.read(str(source), as_version=4))
        for line in secret:
            if not _trivial(line) and line not in public and line not in outside:
                found.setdefault(line, assignment)
    return found


def leaks(root: Path, secrets: dict[str, str]) -> dict[str, list[str]]:
    """{file: [secret lines it holds]} over every file under root (binary files read as text too)."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts):
        if path.suffix in {".whl", ".zip"}:
            with zipfile.ZipFile(path) as z:
                texts = [(f"{path.name}!{n}", z.read(n).decode(errors="ignore")) for n in z.namelist()]
        else:
            texts = [(str(path.relative_to(root)), path.read_bytes().decode(errors="ignore"))]
        for name, text in texts:
            if path.suffix == ".ipynb" or name.endswith(".ipynb"):
                text = "\n".join("".join(cell["source"]) for cell in json.loads(text)["cells"])
            # A secret line anywhere in a line: inside a string, a longer statement, a pickle.
            normalised = "\n".join(_normalise(line) for line in text.splitlines())
            hits = [s for s in secrets if s in normalised]
            if hits:
                found[name] = hits
    return found


@pytest.fixture(scope="module")
def secrets():
    found = secret_lines()
    assert len(found) > 50  # the solutions and hidden tests are really there to leak
    return found


def test_every_module_is_shipped_recorded_or_excluded_with_a_reason():
    assert edition.undecided() == []
    assert all(reason.strip() for reason in edition.EXCLUDED.values())
    assert all(why.strip() for _, why in edition.RECORDED.values())
    shipped = set(edition.SHIPPED) | set(edition.RECORDED)
    assert not [m for m in shipped if any(m == e or m.startswith(e + "/") for e in edition.EXCLUDED)]


def test_the_scan_finds_solution_lines_where_they_are(secrets):
    # The course repository's own sample submissions and source notebooks are made of them (the
    # samples of problems 3, 4 and 6 edit lines that problems 5 and 6 release as given code).
    found = leaks(REPO_ROOT / "autograder" / "grading" / "sample_sets", secrets)
    assert {"problem1.py", "problem2.py", "problem5.py"} <= set(found), found
    assert leaks(REPO_ROOT / "solutions", secrets)


def test_edition_holds_no_solution_hidden_test_or_grading(student_edition, secrets):
    assert not leaks(student_edition, secrets)
    names = {str(p.relative_to(student_edition)) for p in student_edition.rglob("*") if p.is_file()}
    assert not [n for n in names if n.startswith(("solutions", "autograder/grading"))]
    assert {"README.md", "pyproject.toml", "environment.yml", "autograder/recorded_outputs.pt"} <= names
    assert {f"notebooks/{a}/{problems.get_spec(a).notebook}" for a in problems.ASSIGNMENTS} <= names
    # A repository host refuses files of 100 MB and warns from 50 MB.
    assert (student_edition / "autograder" / "recorded_outputs.pt").stat().st_size < 50 * 2**20
    for name in names:
        text = (student_edition / name).read_bytes().decode(errors="ignore")
        if name.endswith(".ipynb"):  # (the package names the markers, to strip them from a source)
            assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, name
        assert course_config.github_path(course_config.COURSE_REPOSITORY) not in text, name
    # The reference functions that would answer an exercise are there as recorded outputs only.
    references = (student_edition / "autograder" / "references.py").read_text()
    assert "masked_fill" not in references and "logsumexp" not in references and "_replay(" in references


def test_the_notebooks_point_at_the_student_edition(student_edition):
    for assignment in problems.ASSIGNMENTS:
        nb = nbformat.read(str(student_edition / "notebooks" / assignment / problems.get_spec(assignment).notebook),
                           as_version=4)
        text = "\n".join(c.source for c in nb.cells)
        assert course_config.colab_url(assignment) in text and course_config.pip_spec() in text
        assert course_config.colab_url(assignment).startswith(
            f"https://colab.research.google.com/github/{course_config.github_path(course_config.STUDENT_REPOSITORY)}/")


def _in_edition(student_edition: Path, code: str, tmp_path: Path, timeout: int = 600):
    """Run `code` in a fresh Python that finds the package in the edition only."""
    env = {**os.environ, "PYTHONPATH": str(student_edition), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    # An editable install of the course here would supply what the edition lacks: as a student, without it.
    isolate = "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
    return subprocess.run([sys.executable, "-c", isolate + code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_every_shipped_module_imports_from_the_edition(student_edition, tmp_path):
    modules = [m.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
               for m in (*edition.SHIPPED, *edition.RECORDED) if not m.endswith("__main__.py")]
    code = f"""
import importlib, autograder
assert autograder.__file__.startswith({str(student_edition)!r}), autograder.__file__
for name in {modules!r}:
    importlib.import_module(name)
from autograder import problems
for a in problems.ASSIGNMENTS:
    problems.get(a)
    assert problems.reference_function(a) is None  # no solutions/ here
try:
    import autograder.grading
except ImportError:
    print("no grading")
"""
    result = _in_edition(student_edition, code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no grading" in result.stdout
    result = _in_edition(student_edition, "import runpy; runpy.run_module('autograder', run_name='__main__')",
                         tmp_path)  # `python -m autograder` with no command: its usage, and no traceback
    assert "usage: autograder" in result.stderr and "Traceback" not in result.stderr


# One bundled wrong answer per problem: the edition's self-check must name its mistake, as the grader does.
WRONG = {"problem1": "gqa_modulo", "problem2": "attention_no_acc_rescale", "problem3": "unmasked_tail"}


@pytest.mark.parametrize("assignment", sorted(WRONG))
def test_edition_self_check_names_a_bundled_mistake(student_edition, tmp_path, assignment):
    from autograder.grading.samples import SAMPLES, sample_kernel_function

    sample = next(s for s in SAMPLES[assignment] if s.name == WRONG[assignment])
    fn = sample_kernel_function(assignment, sample, REPO_ROOT)
    answer_file = Path(sys.modules[fn.__module__].__file__)
    arguments = {"problem1": "m.naive_attention, m.create_mask_bool, m.score_matrix_bytes",
                 "problem2": "m.online_softmax, m.tiled_attention"}.get(assignment, f"m.{fn.__name__}")
    code = f"""
from autograder.device import configure
configure()
import importlib.util
spec = importlib.util.spec_from_file_location("answer", {str(answer_file)!r})
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
from autograder.checks import CheckFailed
from autograder.problems import {assignment} as problem
try:
    problem.check({arguments})
except CheckFailed as exc:
    print("CAUSES", sorted({{f.code for r in exc.verdicts for f in r.findings}}))
"""
    result = _in_edition(student_edition, code, tmp_path)
    assert result.returncode == 0, result.stderr
    causes = re.search(r"^CAUSES (.*)$", result.stdout, re.M)
    assert causes and sample.expected_cause in causes.group(1), result.stdout[-3000:]


def test_the_editions_wheel_holds_the_package_and_no_secret(student_edition, tmp_path, secrets):
    """What `pip install` of the student repository installs (built offline from a copy of the edition)."""
    import shutil

    source = tmp_path / "edition"
    shutil.copytree(student_edition, source)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                             "-q", "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    if result.returncode and "setuptools" in result.stderr:
        pytest.skip("no setuptools here to build the wheel offline")
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "autograder/recorded_outputs.pt" in names and "autograder/problems/problem3.py" in names
    assert not [n for n in names if n.startswith("autograder/grading") or n.endswith("course_config.py")]
    assert not leaks(tmp_path / "dist", secrets)
