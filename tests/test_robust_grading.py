"""Submissions that crash, exit, loop, tamper or arrive broken: each gets a grade or a recorded
reason, the rest of the class is graded normally, and a second run grades nothing twice.

Misbehaviours that leave the notebook's kernel running share a submission (problem 3's ADVERSARIAL
samples), each in a cell of its own that prints a marker once it has done its part: the tests see
that every one of them ran, and what each did to the notebook's run."""
import pytest

from autograder.grading.autograde import grade
from autograder.grading.demo import run_demo
from autograder.grading.export import summary
from autograder.grading.sample_sets.problem3 import MISBEHAVING_CELLS, PATCHING_CELLS, RAN
from autograder.grading.samples import ADVERSARIAL, expected_score
from autograder.grading.scratch import DONE_MARKER
from autograder.notebook_code import grade_id, read
from autograder.problems import total_points

SAMPLE = {s.name: s for s in ADVERSARIAL["problem3"]}


@pytest.fixture(scope="module")
def graded(tmp_path_factory, repo_root):
    mp = pytest.MonkeyPatch()
    # The endless cell is interrupted after 20 s; every other cell of the graded notebook ends within
    # a few seconds (the longest imports torch and triton).
    mp.setenv("COURSE_CELL_TIMEOUT_S", "20")
    course = tmp_path_factory.mktemp("adversarial") / "course"
    # The correct neighbour, graded in the same class.
    names = set(SAMPLE) | {"correct"}
    run, expected = run_demo(repo_root, course, assignments=("problem3",), progress=False, adversarial=True,
                             only=names)
    yield course, {r.student: r for r in run.rows}, expected
    mp.undo()


@pytest.mark.parametrize("sample", ADVERSARIAL["problem3"], ids=lambda s: s.name)
@pytest.mark.slow
def test_each_misbehaving_submission_gets_exactly_its_outcome(graded, sample):
    _, rows, _ = graded
    row = rows[sample.name]
    assert row.score == expected_score(sample, "problem3"), summary([row])
    if sample.expected_points is None:
        assert row.problem, "a submission without a grade must have a recorded reason"
    for note in filter(None, (sample.expected_note, *sample.expected_notes)):
        assert any(note in text for text in row.notes + [row.problem]), summary([row])


def _outputs(course, student):
    """{cell id: (stdout and results, stderr)} of the autograded notebook's code cells."""
    graded = read(course / "autograded" / student / "problem3" / "problem3.ipynb")
    found = {}
    for cell in graded.cells:
        if cell.cell_type == "code":
            streams = [(o.get("name", ""), o.get("text", "") or "".join(o.get("data", {}).get("text/plain", ""))
                        or f"{o.get('ename', '')}: {o.get('evalue', '')}") for o in cell.get("outputs", [])]
            found[cell.id] = ("".join(t for n, t in streams if n != "stderr"),
                              "".join(t for n, t in streams if n == "stderr"), grade_id(cell))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("student,cells", [("misbehaving_notebook", MISBEHAVING_CELLS),
                                           ("patched_checks", PATCHING_CELLS)])
def test_every_cell_of_a_shared_submission_ran(graded, student, cells):
    """Sharing a submission must not keep one misbehaviour from running: each added cell printed
    its marker (the cell after sys.exit() and the endless cell too: the notebook went on)."""
    course, rows, _ = graded
    printed = "".join(out for out, _, _ in _outputs(course, student).values())
    names = [line.split(RAN, 1)[1].split("'")[0] for code in cells for line in code.splitlines() if RAN in line]
    assert len(names) == len(cells)
    assert [name for name in names if RAN + name not in printed] == [], printed[-3000:]
    assert not rows[student].problem, summary([rows[student]])


@pytest.mark.slow
def test_sys_exit_is_caught_and_the_endless_cell_interrupted(graded):
    """IPython turns sys.exit() into an error in its cell, the endless cell is interrupted at the
    cell time limit, and the notebook goes on (test_every_cell_of_a_shared_submission_ran)."""
    course, _, _ = graded
    printed = [out for out, _, _ in _outputs(course, "misbehaving_notebook").values()]
    assert "SystemExit: done early" in next(out for out in printed if RAN + "sys_exit" in out)
    assert "KeyboardInterrupt" in next(out for out in printed if RAN + "endless_cell" in out)


@pytest.mark.slow
def test_the_well_behaved_neighbour_is_graded_normally(graded):
    _, rows, _ = graded
    correct = rows["correct"]
    assert correct.score == total_points("problem3") and not correct.notes and not correct.problem


@pytest.mark.slow
def test_warnings_and_stderr_cost_no_points(graded):
    """The misbehaving notebook's kernel writes to stderr on every call: the test cells, which show the
    judge's verdicts, hold nothing from stderr (nbgrader would zero them), and it keeps every point."""
    course, rows, _ = graded
    noisy = rows["misbehaving_notebook"]
    assert noisy.score == total_points("problem3") and not noisy.failed_tests and not noisy.problem, summary([noisy])
    tests = {gid: (out, err) for out, err, gid in _outputs(course, "misbehaving_notebook").values()
             if gid and gid.startswith("test_")}
    assert all(err == "" for _, err in tests.values()), tests
    # The one visible test cell left (the other was deleted), restored by nbgrader, shows the judge's verdict.
    assert "The case passed." in tests["test_tail_block"][0] and "PASS" in tests["test_tail_block"][0], tests


@pytest.mark.slow
def test_a_second_run_grades_nothing_twice_and_an_interrupted_one_resumes(graded):
    course, rows, _ = graded
    # An interrupted run: a submission was autograded but never recorded as done. (The one whose
    # answer cell is rejected: its judge stops at once, so grading it again costs one notebook run.)
    interrupted = "patch_in_answer_cell"
    (course / "autograded" / interrupted / "problem3" / DONE_MARKER).unlink()
    again = {r.student: r for r in grade(course, ["problem3"], progress=False).rows}
    assert {s: r.score for s, r in again.items()} == {s: r.score for s, r in rows.items()}
    assert not any("already graded" in n for n in again[interrupted].notes)
    assert any("answer cell rejected" in n for n in again[interrupted].notes), again[interrupted].notes
    skipped = [s for s, r in again.items() if any("already graded" in n for n in r.notes)]
    graded_before = [s for s in rows if (course / "autograded" / s / "problem3").is_dir() and s != interrupted]
    assert sorted(skipped) == sorted(graded_before)


@pytest.mark.slow
def test_feedback_exists_for_every_submission_that_ran_to_the_end(graded):
    """nbgrader writes no feedback for a notebook whose kernel died; the reason is in the report."""
    course, rows, _ = graded
    for student, row in rows.items():
        html = course / "feedback" / student / "problem3" / "problem3.html"
        assert html.exists() == (row.score is not None and not row.problem), student


@pytest.mark.parametrize("source,ok", [
    ("@triton.jit\ndef f(x):\n    return tl.max(x, axis=1)\n", True),
    ('LN_2 = tl.constexpr(0.69)\nSCALE = -1.5\n"""notes"""\n', True),
    ("import torch\n", False),
    ("@triton.jit\ndef f(x):\n    return torch.softmax(x)\n", False),
    ("def f(x):\n    return x\n", False),
    ("print('hi')\n", False),
    ("@triton.jit\ndef f(x):\n    return x.__class__\n", False),
    ("@triton.jit\ndef f(x):\n    open('/etc/passwd')\n", False),
    ("def broken(:\n", False),
])
def test_answer_cell_policy(source, ok):
    from autograder.grading.verify import answer_cell_violations

    assert (answer_cell_violations(source) == []) == ok, answer_cell_violations(source)


def test_the_reference_answer_cell_passes_the_policy(repo_root):
    from autograder.grading.verify import answer_cell_violations
    from autograder.notebook_code import cell_by_id, read, strip_markers

    nb = read(repo_root / "solutions" / "problem3" / "problem3.ipynb")
    assert answer_cell_violations(strip_markers(cell_by_id(nb, "online_softmax").source)) == []


@pytest.mark.slow
def test_a_submission_over_its_time_limit_is_stopped_with_its_kernel(tmp_path, repo_root, monkeypatch):
    import psutil

    monkeypatch.setenv("COURSE_SUBMISSION_TIMEOUT_S", "20")
    run, _ = run_demo(repo_root, tmp_path / "course", assignments=("problem3",), progress=False, adversarial=True,
                      only={"misbehaving_notebook"})  # a cell that never finishes
    rows = run.rows
    # The notebook's run is stopped at the limit; the grade is the judge's, which ran beside it.
    assert rows[0].score == total_points("problem3") and "did not finish within 20 s" in rows[0].problem
    kernels = [p for p in psutil.Process().children(recursive=True) if "ipykernel" in " ".join(p.cmdline())]
    assert kernels == []


@pytest.mark.parametrize("output,expect", [
    ("x\n[AutogradeApp | ERROR] boom\n"
     "    nbclient.exceptions.CellTimeoutError: A cell timed out while it was being executed\n"
     "[AutogradeApp | ERROR] Please see the the above traceback for details on the specific errors "
     "on the above failures.",
     "CellTimeoutError: A cell timed out"),
    ("... DeadKernelError: Kernel died\n", "kernel died"),
    ("partial\nnbgrader autograde did not finish within 20 s; it and the notebook's kernel were stopped",
     "did not finish within 20 s"),
    ("[AutogradeApp | ERROR] No notebooks found", "No notebooks found"),
])
def test_the_reason_for_a_failed_nbgrader_run_is_the_telling_line(output, expect):
    from autograder.grading.scratch import _last_error

    assert expect in _last_error(output)
