"""docs/results/mutation/equivalent.json: every mutant it lists is a mutant of today's reference answer
(its id hashes the mutated cell, so an edited answer cell leaves stale ids behind), each with what
changed and why that computes the same; and scripts/mutation_score.py's equality check calls each
problem the way its checks do (problem 1's attention takes is_causal)."""
import functools
import importlib.util
import json
import sys

import pytest

from autograder.notebook_code import cell_by_id, read, strip_markers
from autograder.problems import get_spec
from tests.helpers import REPO_ROOT

EQUIVALENT = json.loads((REPO_ROOT / "docs/results/mutation/equivalent.json").read_text())


@functools.cache
def _mutation_score():
    spec = importlib.util.spec_from_file_location("mutation_score", REPO_ROOT / "scripts" / "mutation_score.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutation_score"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _answer(problem):
    spec = get_spec(problem)
    return strip_markers(cell_by_id(read(REPO_ROOT / "solutions" / problem / spec.notebook), spec.student_cell).source)


@pytest.mark.parametrize("problem", sorted(EQUIVALENT))
def test_every_listed_equivalent_is_a_mutant_of_the_answer_with_a_reason(problem):
    found = {m.ident for m in _mutation_score().mutants(_answer(problem))}
    for ident, entry in EQUIVALENT[problem].items():
        assert ident in found, f"{problem} {ident}: no such mutant of the answer cell (stale id?)"
        assert entry.get("what") and len(entry.get("reason", "")) > 20, (problem, ident, entry)


def test_the_equality_check_calls_problem1_with_is_causal():
    """Without is_causal the right answer itself 'differs' on a causal case: the check must call it
    as problem 1's checks do. Its two equivalent mutants (the GQA branch taken for groups == 1) are equal."""
    ms = _mutation_score()
    answer = _answer("problem1")
    mutants = {m.ident: m.code for m in ms.mutants(answer)}
    assert ms.equal_on_random_inputs("problem1", answer, n=4)[0]
    for ident in EQUIVALENT["problem1"]:
        assert ms.equal_on_random_inputs("problem1", mutants[ident], n=4)[0], ident
