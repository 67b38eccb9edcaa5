"""A hint ladder per exercise: each call reveals one more step, never the code.

    from autograder.hints import hint
    hint("problem3")      # hint 1, then hint 2 on the next run, then the idea of the solution
    hint("problem3", 2)   # show a given step again
"""
from __future__ import annotations

_revealed: dict[str, int] = {}
LEVEL_NAMES = ("Hint 1", "Hint 2", "The idea")


def ladder(assignment: str) -> tuple[str, ...]:
    from . import problems

    return problems.get_spec(assignment).hints


def hint(assignment: str, level: int | None = None) -> None:
    """Print the next hint for `assignment`, or step `level` (1-based)."""
    steps = ladder(assignment)
    if level is None:
        level = min(_revealed.get(assignment, 0) + 1, len(steps))
    if not 1 <= level <= len(steps):
        raise ValueError(f"{assignment} has hints 1..{len(steps)}, not {level}")
    _revealed[assignment] = max(_revealed.get(assignment, 0), level)
    name = LEVEL_NAMES[level - 1] if level <= len(LEVEL_NAMES) and len(steps) == 3 else f"Hint {level}"
    text = f"{name} (step {level} of {len(steps)}): {steps[level - 1]}"
    if level < len(steps):
        text += "\n(run the cell again for the next step)"
    print(text)
