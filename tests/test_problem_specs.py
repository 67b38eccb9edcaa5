"""Every problem's spec: complete, consistent with its notebooks, and refused with a clear error when not."""
import dataclasses

import pytest

from autograder import problems
from autograder.notebook_code import cell_by_id, read
from autograder.problems import problem3


@pytest.mark.parametrize("assignment", problems.ASSIGNMENTS)
def test_every_spec_matches_its_notebooks_and_reference(assignment, repo_root):
    spec = problems.get_spec(assignment)
    assert spec.errors() == [] and spec.assignment == assignment
    for folder in ("solutions", "notebooks"):
        nb = read(repo_root / folder / assignment / spec.notebook)
        for gid in spec.kernel_cells:
            cell_by_id(nb, gid)  # raises KeyError when a kernel cell is missing
    assert callable(getattr(problems.reference_module(assignment, repo_root), spec.kernel_function))
    assert problems.total_points(assignment) == problems.CORRECTNESS_POINTS + spec.performance_points


def test_only_the_triton_problems_give_performance_points():
    assert {a: problems.get_spec(a).performance_points for a in problems.ASSIGNMENTS} == {
        "problem1": 0, "problem2": 0, "problem2b": 2, "problem3": 2, "problem4": 2, "problem5": 2, "problem6": 2,
        "problem7": 2, "problem8": 2}


@pytest.mark.parametrize("change,field", [
    (dict(student_cell="nowhere"), "student_cell"),
    (dict(answer_policy="cuda"), "answer_policy"),
    (dict(hints=()), "hints"),
    (dict(timing=None), "timing"),
    (dict(assignment="problem9"), "assignment"),
    (dict(notebook="problem3.py"), "notebook"),
    (dict(self_check_cases=()), "self_check_cases"),
    (dict(direction="sideways"), "direction"),
])
def test_a_broken_spec_is_refused_naming_the_problem_and_the_field(change, field, monkeypatch):
    monkeypatch.setattr(problem3, "SPEC", dataclasses.replace(problem3.SPEC, **change))
    with pytest.raises(problems.SpecError, match=rf"problem3: .*{field}"):
        problems.spec.validate(problem3)


def test_a_module_without_a_self_check_is_refused(monkeypatch):
    monkeypatch.delattr(problem3, "check")
    with pytest.raises(problems.SpecError, match="problem3: .*check"):
        problems.spec.validate(problem3)


def test_the_registry_checks_a_spec_when_it_loads_the_module(monkeypatch):
    monkeypatch.setattr(problem3, "SPEC", dataclasses.replace(problem3.SPEC, answer_policy="cuda"))
    monkeypatch.setattr(problems, "_VALIDATED", set())
    with pytest.raises(problems.SpecError, match="problem3: answer_policy"):
        problems.get("problem3")
