"""The student edition (`autograder publish`) holds no solution, no hidden test and no grading.

What is secret, and how the edition is scanned for it: autograder/edition_scan.py (every line of
every solution and hidden-test region, every expression of a solution line, and code that computes
one under other names). `publish` refuses to write an edition that the scan finds anything in; the
tests here scan it again, wheel included, and show that the scan finds each kind of leak where it
is put back.

The notebooks themselves are run from the edition by tests/test_selfstudy.py (the slow test that
runs every filled-in student notebook), so the edition's package is what they import.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from autograder import course_config, edition, edition_scan, problems

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def secrets() -> edition_scan.Secrets:
    found = edition_scan.secrets()
    # The solutions and hidden tests are really there to leak, as lines, expressions and forms.
    assert len(found.lines) > 50 and len(found.expressions) > 20 and len(found.forms) > 20
    assert set(found.lines.values()) == set(problems.ASSIGNMENTS)
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
    found = edition_scan.leaks(REPO_ROOT / "autograder" / "grading" / "sample_sets", secrets)
    assert {"problem1.py", "problem2.py", "problem5.py"} <= set(found), found
    assert edition_scan.leaks(REPO_ROOT / "solutions", secrets)


def test_the_scan_finds_solutions_put_back_under_other_names_or_in_words(student_edition, tmp_path, secrets):
    """What the edition records or words differently is caught where it comes back: a re-enactment
    that computes the right key ranges next to the mistakes (the course's own problem 6 module,
    whose block_ranges the edition ships as recorded outputs), and a fix text that quotes the
    expression of a solution line."""
    edition_copy = tmp_path / "edition"
    shutil.copytree(student_edition / "autograder", edition_copy / "autograder",
                    ignore=shutil.ignore_patterns("recorded_outputs.pt", "__pycache__"))
    assert not edition_scan.leaks(edition_copy, secrets)
    shutil.copy(REPO_ROOT / "autograder" / "problems" / "problem6.py", edition_copy / "autograder" / "problems")
    (edition_copy / "autograder" / "fixes.py").write_text(
        'FIX = "compute p = exp2(qk * qk_scale - m_new[:, None]): m_new is in scaled units"\n')
    found = edition_scan.leaks(edition_copy, secrets)
    assert set(found) == {"autograder/problems/problem6.py", "autograder/fixes.py"}, found
    # problem 6's window start and sink end, under the re-enactment's names
    hits = "\n".join(found["autograder/problems/problem6.py"])
    assert "`max(q_start - (window - 1), 0)`" in hits and "`_cdiv(min(sink, q_end), block_n)`" in hits, hits
    assert found["autograder/fixes.py"] == ["expression of problem3: qk*qk_scale-m_new[:,None]"]


def test_publish_refuses_an_edition_that_gives_a_solution_away(tmp_path, monkeypatch):
    """`publish` scans what it writes: a module that would ship a re-enactment's code stops it
    before anything reaches the destination."""
    recorded = {k: v for k, v in edition.RECORDED.items() if k != "autograder/problems/problem6.py"}
    monkeypatch.setattr(edition, "RECORDED", recorded)
    monkeypatch.setattr(edition, "SHIPPED", (*edition.SHIPPED, "autograder/problems/problem6.py"))
    with pytest.raises(edition.LeakFound, match="problem6.py: problem6's `tl.maximum") as refused:
        edition.publish(tmp_path / "edition", REPO_ROOT, log=lambda *_: None, table={})
    assert list(refused.value.found) == ["autograder/problems/problem6.py"]
    assert list(tmp_path.iterdir()) == []  # neither the edition nor what it was written in


def test_publish_into_a_clone_keeps_its_history_and_replaces_the_rest(tmp_path):
    clone = tmp_path / "student-edition"
    (clone / ".git").mkdir(parents=True)
    (clone / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (clone / "notebooks" / "problem9").mkdir(parents=True)  # a problem the course no longer has
    edition.publish(clone, REPO_ROOT, log=lambda *_: None, table={})
    assert (clone / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert not (clone / "notebooks" / "problem9").exists() and (clone / "notebooks" / "problem3").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student-edition"]  # no staging left behind


def test_edition_holds_no_solution_hidden_test_or_grading(student_edition, secrets):
    assert not edition_scan.leaks(student_edition, secrets)
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
    # What the README tells a student to run works from the edition: JupyterLab through the extra.
    readme, environment = ((student_edition / n).read_text() for n in ("README.md", "environment.yml"))
    assert "pip install -e '.[notebooks]'" in readme and "-e .[notebooks]" in environment
    assert '"jupyterlab' in (student_edition / "pyproject.toml").read_text()
    assert "course.sh" not in readme + environment and "solutions/" not in readme
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
    # `python -m autograder` with no command gives its usage; an instructor's command says what this
    # is, and neither a traceback.
    code = """
import runpy, sys
for argv in (["autograder"], ["autograder", "grade", "my-course"], ["autograder", "publish", "elsewhere"]):
    sys.argv = argv
    try:
        runpy.run_module("autograder", run_name="__main__")
    except SystemExit as exc:
        print("EXIT", exc.code, file=sys.stderr)
"""
    result = _in_edition(student_edition, code, tmp_path)
    assert "usage: autograder" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("is an instructor's command: this is the student edition") == 2, result.stderr


# One bundled wrong answer per problem: the edition's self-check must name its mistake, as the grader does.
WRONG = {"problem1": "gqa_modulo", "problem2": "attention_no_acc_rescale", "problem2b": "unmasked_tail",
         "problem3": "unmasked_tail", "problem7": "no_delta", "problem8": "sink_visited_twice"}


def test_edition_self_check_names_bundled_mistakes(student_edition, tmp_path):
    """Problems 1 and 2 check against recorded outputs, problems 2b, 3, 7 and 8 name a mistake from
    recorded re-enactments and a cached answer from the recorded reference of the second call: one Python,
    as a student's notebook kernel is one."""
    from autograder.grading.samples import SAMPLES, sample_kernel_function

    code = "from autograder.device import configure\nconfigure()\nimport importlib.util\n" \
           "from autograder.checks import CheckFailed\n"
    expected = {}
    for assignment, name in WRONG.items():
        sample = next(s for s in SAMPLES[assignment] if s.name == name)
        expected[assignment] = sample.expected_cause
        fn = sample_kernel_function(assignment, sample, REPO_ROOT)
        answer_file = Path(sys.modules[fn.__module__].__file__)
        arguments = {"problem1": "m.naive_attention, m.create_mask_bool, m.score_matrix_bytes",
                     "problem2": "m.online_softmax, m.tiled_attention"}.get(assignment, f"m.{fn.__name__}")
        code += f"""
spec = importlib.util.spec_from_file_location("answer_{assignment}", {str(answer_file)!r})
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
from autograder.problems import {assignment} as problem
try:
    problem.check({arguments})
except CheckFailed as exc:
    print("CAUSES {assignment}", sorted({{f.code for r in exc.verdicts for f in r.findings}}))
"""
    # A kernel that hands back its first answer: the second call's reference is recorded too.
    correct = sample_kernel_function("problem3", next(s for s in SAMPLES["problem3"] if s.name == "correct"),
                                     REPO_ROOT)
    code += f"""
spec = importlib.util.spec_from_file_location("answer_cached", {sys.modules[correct.__module__].__file__!r})
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
first = {{}}
def cached(q, k, v, **kwargs):
    return first.setdefault("answer", m.{correct.__name__}(q, k, v, **kwargs))
from autograder.problems import problem3
try:
    problem3.check(cached)
except CheckFailed as exc:
    print("CAUSES cached", sorted({{f.code for r in exc.verdicts for f in r.findings}}))
"""
    expected["cached"] = "cached_output"
    result = _in_edition(student_edition, code, tmp_path)
    assert result.returncode == 0, result.stderr
    for assignment, cause in expected.items():
        causes = re.search(rf"^CAUSES {assignment} (.*)$", result.stdout, re.M)
        assert causes and cause in causes.group(1), (assignment, result.stdout[-3000:])


def test_the_editions_wheel_holds_the_package_and_no_secret(student_edition, tmp_path, secrets):
    """What `pip install` of the student repository installs (built offline from a copy of the edition)."""
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
    assert not edition_scan.leaks(tmp_path / "dist", secrets)
