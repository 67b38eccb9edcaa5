"""One module per problem: its notebook, its kernel cells, its visible checks and hints.

A problem is registered by existing: every module here named problem<N> is an assignment.
"""
import importlib
import pkgutil
import re


def _discover():
    names = [m.name for m in pkgutil.iter_modules(__path__) if re.fullmatch(r"problem\d+", m.name)]
    return tuple(sorted(names, key=lambda n: int(n[7:])))


ASSIGNMENTS = _discover()


def get(assignment: str):
    """The module describing `assignment` (autograder.problems.<assignment>)."""
    if assignment not in ASSIGNMENTS:
        raise KeyError(f"unknown assignment {assignment!r}; known: {', '.join(ASSIGNMENTS)}")
    return importlib.import_module(f"{__name__}.{assignment}")
