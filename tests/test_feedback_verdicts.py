"""grading/feedback_verdicts.py: the judge's verdicts written under the test cells of an autograded
notebook, and nowhere else; what a student reads for a pass, a failure with its cause, a rejected
answer cell and a test the grader could not run."""
import nbformat

from autograder.grading.feedback_verdicts import HEADER, render_test, write_verdicts

CASE_OK = {"label": "B=1 H=2 L=128 D=64 float16", "passed": True, "summary": "max|err| 1e-04 (tol 0.002)",
           "findings": [], "note": ""}
CASE_BAD = {"label": "B=1 H=2 L=200 D=64 float16", "passed": False, "summary": "max|err| 0.4 > tol 0.002",
            "findings": [{"code": "unmasked_tail", "message": "keys past the end were not masked"}], "note": ""}
PASSED = {"test": "test_full_blocks", "passed": True, "message": "", "score": None, "cases": [CASE_OK, CASE_OK]}
FAILED = {"test": "test_tail_block", "passed": False, "message": "1 of 2 cases failed", "score": None,
          "cases": [CASE_OK, CASE_BAD]}
TIMED = {"test": "test_performance", "passed": True, "message": "", "score": 1.0, "cases": []}


def test_a_passed_test_lists_its_cases_and_says_so():
    text = render_test(PASSED, [], "")
    assert text.startswith(HEADER) and text.count("PASS  B=1 H=2 L=128 D=64 float16") == 2
    assert text.rstrip().endswith("All 2 cases passed.")


def test_a_failed_test_shows_the_failing_case_its_cause_and_the_message():
    text = render_test(FAILED, [], "")
    assert "FAIL  B=1 H=2 L=200 D=64 float16" in text
    assert "likely cause (unmasked_tail): keys past the end were not masked" in text
    assert text.rstrip().endswith("FAILED: 1 of 2 cases failed")


def test_partial_credit_rejection_and_a_missing_verdict_are_said_plainly():
    assert "Points from this cell: 1." in render_test(TIMED, [], "")
    rejected = render_test(PASSED, ["it imports torch"], "")
    assert "rejected before any test ran: it imports torch" in rejected and "PASS" not in rejected
    assert "could not run it (the judge did not finish within 10 s)" in render_test(
        None, [], "the judge did not finish within 10 s")


def _notebook(path):
    def code(source, **nbgrader):
        cell = nbformat.v4.new_code_cell(source)
        if nbgrader:
            cell.metadata["nbgrader"] = nbgrader
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="what the notebook printed\n")]
        return cell
    nb = nbformat.v4.new_notebook()
    nb.cells = [code("x = 1", grade_id="answer", grade=False, solution=True),
                code("# stand-aside stub", grade_id="test_full_blocks", grade=True, solution=False, points=2),
                code("# stand-aside stub", grade_id="test_tail_block", grade=True, solution=False, points=2),
                code("print('mine')")]
    nbformat.write(nb, str(path))


def test_only_the_test_cells_get_the_verdicts(tmp_path):
    path = tmp_path / "problem3.ipynb"
    _notebook(path)
    assert write_verdicts(path, [PASSED, FAILED], [])
    cells = nbformat.read(str(path), as_version=4).cells
    text = ["".join(o.get("text", "") for o in c.outputs) for c in cells]
    assert text[0] == text[3] == "what the notebook printed\n"
    assert "All 2 cases passed." in text[1] and "likely cause (unmasked_tail)" in text[2]
    assert not write_verdicts(tmp_path / "missing.ipynb", [PASSED], [])
