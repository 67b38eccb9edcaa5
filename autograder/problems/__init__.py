"""One module per problem: its notebook, its kernel cells, its visible checks and sample submissions."""
import importlib

ASSIGNMENTS = ("problem3",)


def get(assignment: str):
    """The module describing `assignment` (autograder.problems.<assignment>)."""
    if assignment not in ASSIGNMENTS:
        raise KeyError(f"unknown assignment {assignment!r}; known: {', '.join(ASSIGNMENTS)}")
    return importlib.import_module(f"{__name__}.{assignment}")
