"""An instructor's course folder: the README's commands word for word (course init, import of an
LMS zip, grade), and the zip import on its own: Canvas and Moodle names, bad input, re-import."""
import csv
import os
import re
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from autograder import cli, problems
from autograder.grading import sandbox
from autograder.grading.course import init_course, missing_for_grading
from autograder.grading.lms_import import ImportRefused, import_zip, student_slug
from autograder.grading.samples import SAMPLES, build_submission, expected_score
from autograder.grading.scratch import DONE_MARKER
from autograder.notebook_code import read

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'


def make_zip(path: Path, entries: dict) -> Path:
    """A zip holding `entries` ({name: bytes}) under exactly those names, unsafe ones included."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# The zip import (fast: nothing is graded)


def test_canvas_names_give_lastfirst_and_user_id(tmp_path):
    course = tmp_path / "course"
    zip_path = make_zip(tmp_path / "canvas.zip", {
        "doejane_4711_900001_problem1.ipynb": b"jane",
        "smithjohn_late_4712_900002_problem1-1.ipynb": b"john",
        "smithjohn_4712_900002_notes.txt": b"not a notebook",
    })
    report = import_zip(course, zip_path, "problem1")
    assert {s for s, _, _ in report.imported} == {"doejane-4711", "smithjohn-4712"}
    assert (course / "submitted" / "doejane-4711" / "problem1" / "problem1.ipynb").read_bytes() == b"jane"
    assert (course / "submitted" / "smithjohn-4712" / "problem1" / "problem1.ipynb").read_bytes() == b"john"
    late = {s: note for s, _, note in report.imported}["smithjohn-4712"]
    assert "late" in late and "Canvas" in late
    assert report.unmatched == [("smithjohn_4712_900002_notes.txt", "not a notebook")]
    assert report.complete and report.path is not None and report.path.parent == course / "imports"
    assert "doejane-4711" in report.path.read_text()


def test_moodle_folders_give_the_slug_of_the_full_name(tmp_path):
    course = tmp_path / "course"
    zip_path = make_zip(tmp_path / "moodle.zip", {
        "Jane Doe_101_assignsubmission_file_/problem1.ipynb": b"jane",
        "José Núñez_102_assignsubmission_file_/my work (1).ipynb": b"jose",
        "Ann O'Neil_103_assignsubmission_file_problem1.ipynb": b"ann",   # older Moodle: flat names
        "Jane Doe_101_assignsubmission_onlinetext_/onlinetext.html": b"<p>hi</p>",
        "__MACOSX/Jane Doe_101_assignsubmission_file_/._problem1.ipynb": b"junk",
        "Jane Doe_101_assignsubmission_file_/.ipynb_checkpoints/problem1-checkpoint.ipynb": b"old",
    })
    report = import_zip(course, zip_path, "problem1")
    assert sorted(s for s, _, _ in report.imported) == ["ann-o-neil", "jane-doe", "jose-nunez"]
    assert (course / "submitted" / "jose-nunez" / "problem1" / "problem1.ipynb").read_bytes() == b"jose"
    assert len(report.unmatched) == 3 and report.complete
    assert student_slug("李雷") == student_slug("李雷") and re.fullmatch(r"student-[0-9a-f]{10}", student_slug("李雷"))


def test_two_notebooks_of_one_student_refuse_that_student_and_keep_the_rest(tmp_path):
    course = tmp_path / "course"
    zip_path = make_zip(tmp_path / "two.zip", {
        "doejane_4711_900001_problem1.ipynb": b"a",
        "doejane_4711_900001_problem1_final.ipynb": b"b",
        "smithjohn_4712_900002_problem1.ipynb": b"john",
        "Jane Doe_101_assignsubmission_file_/p.ipynb": b"one Jane",
        "Jane Doe_202_assignsubmission_file_/p.ipynb": b"another Jane",
    })
    report = import_zip(course, zip_path, "problem1")
    assert [s for s, _, _ in report.imported] == ["smithjohn-4712"]
    refused = dict(report.refused)
    assert "more than one notebook" in refused["doejane-4711"]
    assert "share this name" in refused["jane-doe"]
    assert not (course / "submitted" / "doejane-4711").exists() and not (course / "submitted" / "jane-doe").exists()
    assert not report.complete


@pytest.mark.parametrize("unsafe", ["../../doejane_4711_900001_problem1.ipynb",
                                    "/tmp/doejane_4711_900001_problem1.ipynb",
                                    "..\\doejane_4711_900001_problem1.ipynb",
                                    "C:/doejane_4711_900001_problem1.ipynb",
                                    "../Jane Doe_101_assignsubmission_file_/problem1.ipynb"])
def test_names_leaving_the_zip_write_nothing_anywhere(tmp_path, unsafe):
    course = tmp_path / "a" / "b" / "course"
    course.mkdir(parents=True)
    zip_path = make_zip(tmp_path / "evil.zip", {unsafe: b"EVIL-CONTENT",
                                                "smithjohn_4712_900002_problem1.ipynb": b"john"})
    before = {p for p in tmp_path.rglob("*")}
    report = import_zip(course, zip_path, "problem1")
    assert [s for s, _, _ in report.imported] == ["smithjohn-4712"]
    assert report.unmatched and report.unmatched[0][0] == unsafe and "unsafe" in report.unmatched[0][1]
    added = {p for p in tmp_path.rglob("*")} - before
    assert all(p.is_relative_to(course) for p in added)
    assert b"EVIL-CONTENT" not in b"".join(p.read_bytes() for p in added if p.is_file())


def test_bad_input_is_refused_before_anything_changes(tmp_path):
    course = tmp_path / "course"
    good = make_zip(tmp_path / "good.zip", {"doejane_4711_900001_problem1.ipynb": NOTEBOOK})
    with pytest.raises(ImportRefused, match="unknown assignment 'problem9'"):
        import_zip(course, good, "problem9")
    not_zip = tmp_path / "submissions.zip"
    not_zip.write_text("this is a CSV of grades, not a zip")
    with pytest.raises(ImportRefused, match="not a zip"):
        import_zip(course, not_zip, "problem1")
    empty = make_zip(tmp_path / "empty.zip", {"readme.txt": b"x", "grades.csv": b"y"})
    with pytest.raises(ImportRefused, match="no student's notebook"):
        import_zip(course, empty, "problem1")
    with pytest.raises(ImportRefused, match="no such file"):
        import_zip(course, tmp_path / "missing.zip", "problem1")
    assert not course.exists()


def test_reimport_keeps_what_is_there_unless_replace(tmp_path):
    course = tmp_path / "course"
    first = make_zip(tmp_path / "first.zip", {"doejane_4711_900001_problem1.ipynb": b"first"})
    import_zip(course, first, "problem1")
    marker = course / "autograded" / "doejane-4711" / "problem1" / DONE_MARKER
    marker.parent.mkdir(parents=True)
    marker.write_text("ok")   # as if graded
    second = make_zip(tmp_path / "second.zip", {"doejane_4711_900003_problem1.ipynb": b"second",
                                                "smithjohn_4712_900004_problem1.ipynb": b"john"})
    report = import_zip(course, second, "problem1")
    target = course / "submitted" / "doejane-4711" / "problem1" / "problem1.ipynb"
    assert target.read_bytes() == b"first" and marker.exists()
    assert [s for s, _ in report.skipped] == ["doejane-4711"] and "--replace" in report.skipped[0][1]
    assert [s for s, _, _ in report.imported] == ["smithjohn-4712"] and report.complete

    report = import_zip(course, second, "problem1", replace=True)
    assert target.read_bytes() == b"second" and not marker.exists()   # the next `grade` grades it again
    assert "replaced" in dict((s, n) for s, _, n in report.imported)["doejane-4711"]
    assert not list(course.rglob("*.importing"))


def test_import_command_exits_with_the_reason(tmp_path, capsys):
    course = tmp_path / "course"
    course.mkdir()
    zip_path = make_zip(tmp_path / "two.zip", {"doejane_4711_1_a.ipynb": b"a", "doejane_4711_1_b.ipynb": b"b",
                                               "smithjohn_4712_2_problem1.ipynb": b"john"})
    assert cli.main(["import", str(course), str(zip_path), "--assignment", "problem1"]) == 1
    assert "REFUSED   doejane-4711" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="import refused, nothing changed: unknown assignment"):
        cli.main(["import", str(course), str(zip_path), "--assignment", "problem9"])
    with pytest.raises(SystemExit, match="course init"):
        cli.main(["import", str(tmp_path / "nowhere"), str(zip_path), "--assignment", "problem1"])


def test_grade_says_what_a_course_folder_lacks(tmp_path):
    course = tmp_path / "course"
    (course / "submitted" / "alice" / "problem1").mkdir(parents=True)
    (course / "submitted" / "alice" / "problem1" / "problem1.ipynb").write_bytes(NOTEBOOK)
    (course / "solutions").mkdir()
    with pytest.raises(SystemExit) as exc:
        cli.main(["grade", str(course)])
    message = str(exc.value)
    assert "nbgrader_config.py" in message and "gradebook" in message and "notebooks/problem1" in message
    assert f"python -m autograder course init {course}" in message
    assert missing_for_grading(tmp_path / "nowhere", ["problem1"]) == [f"the folder {tmp_path / 'nowhere'} itself"]


def test_course_init_again_keeps_submissions_grades_and_an_edited_config(tmp_path):
    course = tmp_path / "course"
    first = init_course(REPO_ROOT, course, assignments=[])   # no release: nothing for nbgrader to do
    assert first.created and (course / "nbgrader_config.py").exists() and (course / "solutions" / "problem1").is_dir()
    (course / "nbgrader_config.py").write_text((course / "nbgrader_config.py").read_text() + "\n# ours\n")
    (course / "submitted" / "alice" / "problem1").mkdir(parents=True)
    (course / "submitted" / "alice" / "problem1" / "problem1.ipynb").write_bytes(NOTEBOOK)
    (course / "autograded" / "alice" / "problem1").mkdir(parents=True)
    (course / "autograded" / "alice" / "problem1" / DONE_MARKER).write_text("ok")
    (course / "grades.csv").write_text("kept")
    (course / "solutions" / "stale.txt").write_text("gone after init")
    again = init_course(REPO_ROOT, course, assignments=[])
    assert (course / "nbgrader_config.py").read_text().endswith("# ours\n")
    assert (course / "submitted" / "alice" / "problem1" / "problem1.ipynb").read_bytes() == NOTEBOOK
    assert (course / "grades.csv").read_text() == "kept" and not (course / "solutions" / "stale.txt").exists()
    kept = "\n".join(again.kept)
    assert "submitted/ (1 submission)" in kept and "autograded/ (1 graded)" in kept and "grades.csv" in kept
    assert "nbgrader_config.py (it differs" in kept and "kept: " in again.describe()


def test_course_init_refuses_a_folder_holding_the_repository(capsys):
    with pytest.raises(SystemExit, match="needs a folder of its own"):
        cli.main(["course", "init", str(REPO_ROOT)])
    with pytest.raises(SystemExit, match="unknown assignment problem9"):
        cli.main(["course", "init", "somewhere", "--assignment", "problem9"])


# ---------------------------------------------------------------------------------------------
# The README's commands, word for word (slow: nbgrader releases every problem, and grades two)


def readme_instructor_commands() -> list[str]:
    """The command lines of the README's instructor code block (the one that runs `course init`)."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## For instructors", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    block = next(b for b in blocks if "autograder course init" in b)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_readme_names_init_import_and_grade():
    commands = readme_instructor_commands()
    assert [" ".join(c.split()[:4]) for c in commands] == [
        "python -m autograder course", "python -m autograder import", "python -m autograder grade"]
    assert commands[0].split()[4] == "init"


@pytest.mark.slow
@pytest.mark.skipif(not sandbox.probe().available, reason="`autograder grade` needs the bubblewrap sandbox")
def test_the_readme_instructor_commands_grade_a_class(tmp_path):
    assignment = "problem1"   # the cheapest problem to grade
    spec = problems.get_spec(assignment)
    samples = {s.name: s for s in SAMPLES[assignment]}
    source = read(REPO_ROOT / "solutions" / assignment / spec.notebook)
    release = read(REPO_ROOT / "notebooks" / assignment / spec.notebook)
    students = {"doejane-4711": samples["correct"], "smithjohn-4712": samples["gqa_modulo"]}
    entries = {}
    for sample, name in zip(students.values(), ("doejane_4711_900001_problem1.ipynb",
                                                          "smithjohn_late_4712_900002_problem1-1.ipynb"),
                                       strict=True):
        nb = build_submission(sample, source, release, spec.student_cell, spec.kernel_cells[-1])
        entries[name] = nbformat.writes(nb).encode()
    make_zip(tmp_path / "submissions.zip", entries)

    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    for command in readme_instructor_commands():
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=3600)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    course = tmp_path / "my-course"
    with open(course / "grades.csv") as f:
        scores = {row["student_id"]: float(row["score"]) for row in csv.DictReader(f)
                  if row["assignment"] == assignment}
    assert scores == {s: float(expected_score(sample, assignment)) for s, sample in students.items()}
    for student in students:
        assert (course / "feedback" / student / assignment / "problem1.html").exists()
    with open(course / "grade_report.csv") as f:
        assert {row["submission"] for row in csv.DictReader(f)} == set(students)

    # Run again after a change to the problem: submissions, grades and the gradebook stay.
    submitted = tree(course / "submitted")
    report = init_course(REPO_ROOT, course, [assignment])
    assert not report.created and any("2 graded submissions" in k for k in report.kept)
    assert tree(course / "submitted") == submitted
    with sqlite3.connect(course / "build" / "gradebook.db") as db:
        assert db.execute("SELECT COUNT(*) FROM submitted_assignment").fetchone()[0] == 2
    assert missing_for_grading(course, [assignment]) == []
