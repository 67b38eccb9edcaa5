"""How much grading power the tests have: mutate each problem's reference answer cell and grade
every mutant the way a student's answer is graded.

    python scripts/mutation_score.py [--problems problem3] [--limit 40] [--jobs 2] [--out docs/results/mutation/cpu]

Mutations (each applied once, at one place, with `ast`): a comparison flipped (strict <-> non-strict,
< <-> >, == <-> !=); + - * / swapped for one another; a numeric constant replaced by 0, 1, -1 and twice
itself; a statement deleted (`pass` where a body would be empty); two arguments of a call swapped;
axis=0 <-> axis=1; exp2 <-> exp, log2 <-> log, maximum <-> minimum.

Each mutant goes through `autograder.grading.verify` (the judge, the candidate in its sandbox, every
graded test of the source notebook, hidden ones and performance included), several at once with
`--jobs`, each process held to one thread. A mutant is
  killed      it lost points;
  survived    it kept full marks;
  equivalent  it kept full marks and computes what the reference computes: listed with its reason in
              equivalent.json next to this script's results, and shown equal on many random inputs here;
  grader failure  the judge gave no verdict (it crashed or ran out of time).
For each problem the report gives the kill rate over the non-equivalent mutants, the share of killed
mutants that got a named cause (and the right one where a mutation is a known mistake), and every
mutant told it returned a cached result (there must be none: a mutant is a bug, never a cheat).
`--limit N` grades N mutants per problem, spread evenly over the list (every kind of mutation keeps
its share); the report says so.
"""
from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
if not Path("/dev/nvidiactl").exists():  # no GPU: kernels run in the Triton interpreter, set before any jit
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import nbformat  # noqa: E402

from autograder.notebook_code import cell_by_id, read, strip_markers  # noqa: E402
from autograder.problems import ASSIGNMENTS, get_spec, total_points  # noqa: E402

EQUIVALENT_FILE = REPO / "docs" / "results" / "mutation" / "equivalent.json"
SWAPS = {"exp2": "exp", "exp": "exp2", "log2": "log", "log": "log2", "maximum": "minimum", "minimum": "maximum"}
COMPARE_FLIPS = {ast.Lt: (ast.LtE, ast.Gt), ast.LtE: (ast.Lt, ast.GtE), ast.Gt: (ast.GtE, ast.Lt),
                 ast.GtE: (ast.Gt, ast.LtE), ast.Eq: (ast.NotEq,), ast.NotEq: (ast.Eq,)}
BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div)
OP_TEXT = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
           ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
# Problem 3: mutations that are one of the mistakes the grader names, and the cause it must give.
KNOWN_FAULTS = {
    "problem3": (
        ("delete", "acc = acc * alpha", "no_acc_rescale"),
        ("delete", "m_i = m_new", "no_max_update"),
        ("delete", "qk = tl.where(", "unmasked_tail"),
        ("delete", "if MASK_KEYS:", "unmasked_tail"),
        ("compare", "key_idx[None, :] <= seq_len_k", "tail_keeps_pad"),
    ),
}


@dataclass
class Mutant:
    ident: str        # stable: kind, line and a hash of the mutated cell
    kind: str         # compare, binop, constant, delete, swap_args, axis, function
    line: int         # line in the answer cell (as ast.unparse writes it)
    what: str         # one line: the change
    code: str         # the mutated answer cell
    mutated_line: str  # the changed statement, as unparsed


def _docstring(node) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


class _Sites(ast.NodeVisitor):
    """Every place a mutation applies, in source order: (path to the node, kind, option)."""

    def __init__(self):
        self.sites: list[tuple] = []
        self.path: list = []

    def generic_visit(self, node):
        for field, value in ast.iter_fields(node):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, ast.AST):
                        self.path.append((field, i))
                        self._site(item, value, i)
                        self.visit(item)
                        self.path.pop()
            elif isinstance(value, ast.AST):
                self.path.append((field, None))
                self._site(value, None, None)
                self.visit(value)
                self.path.pop()

    def _site(self, node, siblings, index):
        here = tuple(self.path)
        if isinstance(node, ast.stmt) and siblings is not None and not _docstring(node) \
                and not isinstance(node, (ast.FunctionDef, ast.Import, ast.ImportFrom)):
            self.sites.append((here, "delete", None))
        if isinstance(node, ast.Compare):
            for j, op in enumerate(node.ops):
                for new in COMPARE_FLIPS.get(type(op), ()):
                    self.sites.append((here, "compare", (j, new)))
        if isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in BINOPS:
            for new in BINOPS:
                if new is not type(node.op):
                    self.sites.append((here, "binop", new))
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            for new in sorted({0, 1, -1, 2 * node.value} - {node.value}):
                self.sites.append((here, "constant", new))
        if isinstance(node, ast.Call):
            for i in range(len(node.args)):
                for j in range(i + 1, len(node.args)):
                    self.sites.append((here, "swap_args", (i, j)))
            for j, kw in enumerate(node.keywords):
                if kw.arg == "axis" and isinstance(kw.value, ast.Constant) and kw.value.value in (0, 1):
                    self.sites.append((here, "axis", j))
        if isinstance(node, ast.Attribute) and node.attr in SWAPS:
            self.sites.append((here, "function", SWAPS[node.attr]))


def _resolve(tree, path):
    parent, node = None, tree
    for field, index in path:
        parent = node
        node = getattr(node, field) if index is None else getattr(node, field)[index]
    return parent, node


def _statement_at(tree, path):
    """The innermost statement containing the node at `path`."""
    node, found = tree, None
    for field, index in path:
        node = getattr(node, field) if index is None else getattr(node, field)[index]
        if isinstance(node, ast.stmt) and not isinstance(node, (ast.FunctionDef, ast.If, ast.For, ast.While)):
            found = node
    return found if found is not None else node


def _apply(tree, path, kind, option) -> str:
    """Apply one mutation to a copy of `tree`; return (the cell, what changed, the changed statement)."""
    tree = copy.deepcopy(tree)
    parent, node = _resolve(tree, path)
    statement = _statement_at(tree, path)
    before = ast.unparse(statement).splitlines()[0] if kind != "delete" else ast.unparse(node).splitlines()[0]
    if kind == "delete":
        field, index = path[-1]
        body = getattr(parent, field)
        del body[index]
        if not [s for s in body if not _docstring(s)]:
            body.append(ast.Pass())
        what = f"deleted: {before}"
    elif kind == "compare":
        j, new = option
        old = type(node.ops[j])
        node.ops[j] = new()
        what = f"{OP_TEXT[old]} -> {OP_TEXT[new]}"
    elif kind == "binop":
        what = f"{OP_TEXT[type(node.op)]} -> {OP_TEXT[option]}"
        node.op = option()
    elif kind == "constant":
        what = f"{node.value!r} -> {option!r}"
        node.value = option
    elif kind == "swap_args":
        i, j = option
        node.args[i], node.args[j] = node.args[j], node.args[i]
        what = f"arguments {i} and {j} of {ast.unparse(node.func)} swapped"
    elif kind == "axis":
        node.keywords[option].value = ast.Constant(1 - node.keywords[option].value.value)
        what = f"axis={1 - node.keywords[option].value.value} -> axis={node.keywords[option].value.value}"
    else:
        what = f"{node.attr} -> {option}"
        node.attr = option
    ast.fix_missing_locations(tree)
    after = ast.unparse(statement).splitlines()[0] if kind != "delete" else before
    return ast.unparse(tree), f"{what} (in: {before})" if kind != "delete" else what, after


def mutants(answer: str) -> list[Mutant]:
    """Every mutant of an answer cell, deduplicated, in source order; none equal to the original."""
    tree = ast.parse(answer)
    original = ast.unparse(tree)
    visitor = _Sites()
    visitor.visit(tree)
    seen, out = {original}, []
    for path, kind, option in visitor.sites:
        try:
            code, what, after = _apply(tree, path, kind, option)
            compile(code, "<mutant>", "exec")
        except (SyntaxError, ValueError, TypeError):
            continue
        if code in seen:
            continue
        seen.add(code)
        _, node = _resolve(tree, path)
        line = getattr(node, "lineno", 0)
        digest = hashlib.sha256(code.encode()).hexdigest()[:10]
        out.append(Mutant(f"{kind}-L{line}-{digest}", kind, line, what, code, after))
    return out


def spread(items: list, limit: int | None) -> list:
    """`limit` items spread evenly over the list (all when no limit)."""
    if not limit or limit >= len(items):
        return list(items)
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def expected_cause(assignment: str, mutant: Mutant) -> str | None:
    for kind, text, code in KNOWN_FAULTS.get(assignment, ()):
        if mutant.kind == kind and text in mutant.mutated_line and (kind != "delete" or text in mutant.what):
            return code
    return None


def grade(assignment: str, mutant: Mutant, workdir: Path) -> dict:
    from autograder.grading.verify import verify

    spec = get_spec(assignment)
    source_path = REPO / "solutions" / assignment / spec.notebook
    release_path = REPO / "notebooks" / assignment / spec.notebook
    nb = read(release_path)
    cell_by_id(nb, spec.student_cell).source = mutant.code
    submission = workdir / f"{assignment}-{mutant.ident}.ipynb"
    nbformat.write(nb, str(submission))
    start = time.monotonic()
    outcome = verify(submission, source_path, release_path, spec.kernel_cells, spec.student_cell,
                     policy=spec.answer_policy, assignment=assignment, timeout_s=1200)
    points = {c.metadata.nbgrader["grade_id"]: float(c.metadata.nbgrader.get("points", 0))
              for c in read(source_path).cells
              if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")}
    score, lost, causes, accused = 0.0, [], {}, False
    by_test = {v["test"]: v for v in outcome.verdicts}
    for test, worth in points.items():
        passed, message = outcome.results.get(test, (False, outcome.error or "did not run"))
        got = min(worth, outcome.scores.get(test, worth)) if passed else 0.0
        score += got
        verdict = by_test.get(test, {})
        findings = verdict.get("findings", {})
        accused = accused or "cached_output" in findings or any(
            f.get("code") == "cached_output" for c in verdict.get("cases", []) for f in c.get("findings", []))
        if got < worth:
            lost.append({"test": test, "points": worth - got, "message": message[:200]})
            causes.update(findings)
    if outcome.violations:
        status = "killed"
        causes = {"answer_rejected": "; ".join(outcome.violations)[:200]}
    elif outcome.grader_error or outcome.error:
        status = "grader failure"
    else:
        status = "killed" if score < sum(points.values()) else "survived"
    expected = expected_cause(assignment, mutant)
    performance_only = bool(lost) and all(item["test"] == "test_performance" for item in lost)
    return {"assignment": assignment, "id": mutant.ident, "kind": mutant.kind, "line": mutant.line,
            "what": mutant.what, "status": status, "score": score, "max_score": sum(points.values()),
            "lost": lost, "causes": sorted(causes), "cause_named": bool(causes) or performance_only,
            "performance_only": performance_only, "expected_cause": expected,
            "expected_cause_given": expected in causes if expected else None, "accused_of_caching": accused,
            "grader_error": outcome.grader_error or outcome.error, "seconds": round(time.monotonic() - start, 1)}


def equal_on_random_inputs(assignment: str, code: str, n: int = 16) -> tuple[bool, str]:
    """Run the mutant and the reference in this process on `n` random inputs (the self-check shapes,
    other seeds, lengths with and without a partial block); equal when the mutant passes every case
    the way the reference does. Returns (equal, how)."""
    import torch

    from autograder import device
    from autograder.checks import run_case, run_grad_case
    from autograder.kernel_module import import_kernel_module

    torch.set_num_threads(1)
    spec = get_spec(assignment)
    module = import_kernel_module(spec, read(REPO / "solutions" / assignment / spec.notebook), answer=code,
                                  name="mutant")
    fn = getattr(module, spec.kernel_function)
    runtime = device.current() if spec.answer_policy == "triton" else get_spec_runtime(assignment)
    cases = []
    for i in range(n):
        base = spec.self_check_cases[i % len(spec.self_check_cases)]
        # The length with and without a partial block: L of attention cases, the columns of 2b's rows.
        field = "L" if hasattr(base, "L") else "cols"
        size = getattr(base, field)
        size = size + (0, 1, 37, -1)[i % 4] if size > 1 else size
        cases.append(replace(base, **{field: max(1, size)}, seed=1000 + i))
    problem = get_problem(assignment)
    for case in cases:
        if hasattr(problem, "run_kernel_case"):  # a problem with its own kind of case (2b's softmax rows)
            result = problem.run_kernel_case(fn, case)
        else:
            check = run_grad_case if spec.direction == "backward" else run_case
            # Problem 1's function takes is_causal, as its checks pass it (problem1.causal); the kernels' do not.
            call = problem.causal(fn) if case.is_causal and callable(getattr(problem, "causal", None)) else fn
            result = check(call, case, runtime=runtime, require_triton=spec.answer_policy == "triton")
        if not result.passed:
            return False, f"differs on {case.label()}: {result.summary}"
    return True, f"equal within the grading tolerance on {len(cases)} random inputs"


def get_problem(assignment: str):
    from autograder.problems import get

    return get(assignment)


def get_spec_runtime(assignment: str):
    module = get_problem(assignment)
    return module.torch_runtime() if hasattr(module, "torch_runtime") else None


def versions() -> dict:
    import torch
    import triton

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    return {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
            "machine": f"{cpu}, {os.cpu_count()} cores visible, {platform.system()} {platform.release()}",
            "commit": commit.strip()}


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def runtime_name() -> str:
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "CPU, Triton interpreter"
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"


def summarise(rows: list[dict], total: dict, limit) -> dict:
    out = {}
    for assignment in sorted({r["assignment"] for r in rows}):
        mine = [r for r in rows if r["assignment"] == assignment]
        status = Counter(r["status"] for r in mine)
        killed = [r for r in mine if r["status"] == "killed"]
        scored = status["killed"] + status["survived"]
        known = [r for r in killed if r["expected_cause"]]
        out[assignment] = {
            "mutants": total[assignment], "graded": len(mine), "limited": bool(limit and total[assignment] > limit),
            "killed": status["killed"], "survived": status["survived"], "equivalent": status["equivalent"],
            "grader_failures": status["grader failure"],
            "kill_rate": status["killed"] / scored if scored else None,
            "named_share": sum(r["cause_named"] for r in killed) / len(killed) if killed else None,
            "known_faults": len(known), "known_faults_right": sum(bool(r["expected_cause_given"]) for r in known),
            "accused_of_caching": [r["id"] for r in mine if r["accused_of_caching"]],
            "unnamed": [f"{r['id']}: {r['what']}" for r in killed if not r["cause_named"]],
            "survivors": [f"{r['id']}: {r['what']} ({r.get('random_inputs', '')}; "
                          f"{r.get('equivalent_reason', 'differs from the reference')})"
                          for r in mine if r["status"] == "survived"],
            "equivalents": [f"{r['id']}: {r['what']}: {r['equivalent_reason']} ({r['random_inputs']})"
                            for r in mine if r["status"] == "equivalent"],
            "misnamed": [f"{r['id']}: {r['what']}: expected {r['expected_cause']}, got {r['causes']}"
                         for r in killed if r["expected_cause"] and not r["expected_cause_given"]],
            # What a wrong answer costs to grade against a right one (issue: at most 1.5x).
            "median_s_killed": _median([r["seconds"] for r in killed if "seconds" in r]),
            "median_s_full_marks": _median([r["seconds"] for r in mine
                                            if r["status"] in ("survived", "equivalent") and "seconds" in r]),
        }
    return out


def markdown(summary: dict, meta: dict) -> str:
    lines = [f"# Mutation score ({meta.get('runtime', 'CPU, Triton interpreter')})", "",
             f"Command: `{meta['command']}`  ", f"Versions: python {meta['python']}, torch {meta['torch']}, "
             f"triton {meta['triton']}, commit {meta['commit']}  ", f"Machine: {meta['machine']}  ",
             *([f"Report: `{meta['report_command']}` (survivors' equivalence checked on "
                f"{meta['equivalence_checked_on']})  "] if meta.get("report_command") else []),
             f"Finished: {meta['finished']} ({meta['wall_s']:.0f} s)"
             + (f", {meta['left_to_grade']} chosen mutants not graded yet (--resume grades them)"
                if meta.get("left_to_grade") else ""), "",
             "| problem | mutants | graded | killed | survived | equivalent | grader failures | kill rate | "
             "cause named | known mistake named right | accused of caching | median s, killed / full marks |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for a, s in summary.items():
        rate = f"{s['kill_rate']:.0%}" if s["kill_rate"] is not None else "-"
        named = f"{s['named_share']:.0%}" if s["named_share"] is not None else "-"
        graded = f"{s['graded']}" + (" (limited)" if s["limited"] else "")
        lines.append(f"| {a} | {s['mutants']} | {graded} | {s['killed']} | {s['survived']} | {s['equivalent']} | "
                     f"{s['grader_failures']} | {rate} | {named} | {s['known_faults_right']} of "
                     f"{s['known_faults']} | {len(s['accused_of_caching'])} | "
                     f"{_seconds(s.get('median_s_killed'))} / {_seconds(s.get('median_s_full_marks'))} |")
    lines += ["", "Kill rate: killed / (killed + survived), equivalent mutants left out. Cause named: the share "
              "of killed mutants whose lost points came with a named likely cause (a mutant that loses only "
              "performance points counts as named: the timing is the cause).", ""]
    for a, s in summary.items():
        for title, items in (("equivalent", s["equivalents"]), ("survived", s["survivors"]),
                             ("killed without a named cause", s["unnamed"]),
                             ("a known mistake, named otherwise", s["misnamed"]),
                             ("accused of returning a cached result", s["accused_of_caching"])):
            if items:
                lines += [f"## {a}: {title}", ""] + [f"- {item}" for item in items] + [""]
    return "\n".join(lines)


def compare_runs(mine: list[dict], other_dir: Path, other_name: str) -> list[str]:
    """Markdown lines: the mutants graded both here and in `other_dir` (another machine's run), and
    whether each got the same score and lost points in the same tests there."""
    other_log = other_dir / "graded.jsonl"
    if not other_log.exists():
        return [f"No run to compare with in {other_dir}."]
    rows = map(json.loads, filter(str.strip, other_log.read_text().splitlines()))
    other = {(r["assignment"], r["id"]): r for r in rows}
    both = [(r, other[(r["assignment"], r["id"])]) for r in mine if (r["assignment"], r["id"]) in other]
    if not both:
        return [f"No mutant was graded both here and in {other_name}."]
    kept = ("survived", "equivalent")
    same_fate = sum((a["status"] in kept) == (b["status"] in kept) for a, b in both)
    same_score = [(a, b) for a, b in both if abs(a.get("score", -1) - b.get("score", -1)) < 1e-9]
    performance = sum(any(x["test"] == "test_performance" for x in a.get("lost", [])) ==
                      any(x["test"] == "test_performance" for x in b.get("lost", [])) for a, b in both)
    lines = [f"## Against {other_name}", "",
             f"{len(both)} mutants were graded on both: {same_fate} killed or kept alike, {len(same_score)} with "
             f"the same score, {performance} with the same performance points (both lost them or neither).", ""]
    for a, b in both:
        if (a, b) not in same_score:
            lost_a = sorted(x["test"] for x in a.get("lost", []))
            lost_b = sorted(x["test"] for x in b.get("lost", []))
            lines.append(f"- {a['assignment']} {a['id']} ({a['what'][:70]}): {a.get('score')} here, "
                         f"{b.get('score')} there; lost only here: {sorted(set(lost_a) - set(lost_b))}, "
                         f"only there: {sorted(set(lost_b) - set(lost_a))}")
    return lines + [""]


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(names) + 2), 3.2))
    width = 0.38
    kill = [100 * (summary[n]["kill_rate"] or 0) for n in names]
    named = [100 * (summary[n]["named_share"] or 0) for n in names]
    xs = range(len(names))
    ax.bar([x - width / 2 for x in xs], kill, width, label="killed (of non-equivalent)")
    ax.bar([x + width / 2 for x in xs], named, width, label="cause named (of killed)")
    ax.set_xticks(list(xs), [f"{n}\n({summary[n]['graded']} mutants)" for n in names])
    ax.set_ylim(0, 105)
    ax.set_ylabel("%")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Mutants of the reference answer cell, graded by the judge", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=list(ASSIGNMENTS))
    parser.add_argument("--limit", type=int, default=None, help="mutants graded per problem, spread evenly")
    parser.add_argument("--jobs", type=int, default=2, help="mutants graded at once")
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "mutation" / "cpu"))
    parser.add_argument("--list", action="store_true", help="only list the mutants")
    parser.add_argument("--compare-with", metavar="DIR", default=None,
                        help="another run's OUT (e.g. the CPU's against the H200's): same fate, score and "
                             "performance points for the mutants both graded, in the report")
    parser.add_argument("--report-only", action="store_true",
                        help="grade nothing: write the report of the mutants already in OUT/graded.jsonl")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no mutant after this many seconds; report what was graded (then --resume)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the mutants already graded in OUT/graded.jsonl and grade the rest")
    args = parser.parse_args()
    os.environ.setdefault("COURSE_JUDGE_CACHE", str(REPO / "build" / "judge-cache-mutation"))
    equivalent = json.loads(EQUIVALENT_FILE.read_text()) if EQUIVALENT_FILE.exists() else {}
    todo, total = [], {}
    for assignment in args.problems:
        spec = get_spec(assignment)
        answer = strip_markers(cell_by_id(read(REPO / "solutions" / assignment / spec.notebook),
                                          spec.student_cell).source)
        found = mutants(answer)
        total[assignment] = len(found)
        chosen = spread(found, args.limit)
        print(f"{assignment}: {len(found)} mutants, grading {len(chosen)} (max {total_points(assignment):g} points)")
        todo += [(assignment, m) for m in chosen]
        if args.list:
            for m in chosen:
                print(f"  {m.ident}: {m.what}")
    if args.list:
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mutants-"))
    start = time.monotonic()
    rows = []
    log_path = out / "graded.jsonl"
    earlier_wall_s = 0.0  # a resumed run reports the time of all its calls
    if args.resume and (out / "results.json").exists():
        earlier_wall_s = json.loads((out / "results.json").read_text())["meta"].get("wall_s", 0.0)
    if args.report_only:
        args.resume = True
    if args.resume and log_path.exists():
        chosen_ids = {(a, m.ident) for a, m in todo}
        rows = [row for row in map(json.loads, filter(str.strip, log_path.read_text().splitlines()))
                if (row["assignment"], row["id"]) in chosen_ids]
        done_ids = {(r["assignment"], r["id"]) for r in rows}
        todo_left = [] if args.report_only else [(a, m) for a, m in todo if (a, m.ident) not in done_ids]
    else:
        log_path.unlink(missing_ok=True)
        todo_left = list(todo)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(grade, a, m, work): (a, m) for a, m in todo_left}
        for done, future in enumerate(as_completed(futures), 1):
            a, m = futures[future]
            if future.cancelled():
                continue
            if args.budget_s and time.monotonic() - start > args.budget_s:
                for pending in futures:  # over budget: finish the mutants being graded, start no more
                    pending.cancel()
            try:
                row = future.result()
            except Exception as exc:  # the script must report, not stop, when one mutant breaks it
                row = {"assignment": a, "id": m.ident, "kind": m.kind, "line": m.line, "what": m.what,
                       "status": "grader failure", "grader_error": repr(exc)[:300], "causes": [],
                       "cause_named": False, "accused_of_caching": False, "expected_cause": None}
            rows.append(row)
            with open(out / "graded.jsonl", "a") as log:  # kept as it goes: a long run loses nothing
                log.write(json.dumps(row) + "\n")
            print(f"[{done}/{len(todo_left)}] {a} {row['status']:<14} {row['id']}: {row['what'][:70]} "
                  f"{row.get('causes', [])}", flush=True)
    for row in rows:  # full marks: equal to the reference on many random inputs, or a gap in the tests
        if row["status"] != "survived":
            continue
        code = next(m.code for a, m in todo if a == row["assignment"] and m.ident == row["id"])
        try:
            same, how = equal_on_random_inputs(row["assignment"], code)
        except Exception as exc:  # a mutant that cannot even be imported here is not equivalent
            same, how = False, f"could not run it here: {exc!r}"[:200]
        listed = equivalent.get(row["assignment"], {}).get(row["id"])
        row["random_inputs"] = how
        if same and listed:
            row["status"], row["equivalent_reason"] = "equivalent", listed["reason"]
        elif same:
            row["equivalent_reason"] = "unlisted: equal on random inputs, add it to equivalent.json with a reason"
    rows.sort(key=lambda r: (r["assignment"], r["id"]))
    import datetime

    meta = {"command": "python scripts/mutation_score.py " + " ".join(sys.argv[1:]), **versions(),
            "runtime": runtime_name(),
            "jobs": args.jobs, "limit": args.limit, "wall_s": time.monotonic() - start + earlier_wall_s,
            "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if args.report_only and (out / "results.json").exists():
        # The mutants were graded elsewhere (a GPU runner): keep that machine's description; only the
        # equivalence of survivors was checked here.
        graded_on = json.loads((out / "results.json").read_text())["meta"]
        meta = {**graded_on, "report_command": meta["command"], "finished": meta["finished"],
                "equivalence_checked_on": f"{runtime_name()}, {meta['machine']}"}
    meta["left_to_grade"] = len(todo) - len(rows)
    summary = summarise(rows, total, args.limit)
    (out / "results.json").write_text(json.dumps({"meta": meta, "summary": summary, "mutants": rows}, indent=1))
    report = markdown(summary, meta)
    if args.compare_with:
        other = Path(args.compare_with)
        other_meta = other / "results.json"
        name = (json.loads(other_meta.read_text())["meta"].get("runtime", "CPU, Triton interpreter")
                if other_meta.exists()
                else str(other))
        report += "\n" + "\n".join(compare_runs(rows, other, f"{name} ({other.name})"))
    (out / "README.md").write_text(report + "\n")
    plot(summary, out / "mutation_score.png")
    print(report)
    if any(s["accused_of_caching"] for s in summary.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
