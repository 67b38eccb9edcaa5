"""What the student edition must not hold, and a scan of a folder for it.

Secret is what lies between `### BEGIN SOLUTION` and `### END SOLUTION` and between
`### BEGIN HIDDEN TESTS` and `### END HIDDEN TESTS` in the source notebooks, unless a student
notebook shows it anyway (later problems release earlier problems' finished kernels as given code,
and a line that any student notebook shows is public). Three kinds of evidence are searched for:

* lines: each secret line, whitespace normalised, anywhere in a file (inside a string, a longer
  statement, a pickle);
* expressions: each sub-expression of a solution line, whitespace removed, anywhere in a file: a
  fix text that quotes `qk * qk_scale - m_new[:, None]` gives the line away as surely as the line;
* forms: each sub-expression of a solution line up to the names it uses (`min((m + 1) * bm, n)`
  is `tl.minimum((start_m + 1) * BLOCK_M, seq_len)` with other names), searched for in the
  Python code of every file: a re-enactment that computes the right answer next to the mistakes.

Short or trivial code proves nothing (`m = m_new`, `q.shape[1]`): lines under MIN_LINE_CHARS,
expressions under MIN_EXPRESSION_CHARS or MIN_EXPRESSION_NODES and forms under MIN_FORM_NODES are
not searched for, nor what the chapters state themselves (GIVEN_LINES, GIVEN_FORMS, each with where).
"""
from __future__ import annotations

import ast
import copy
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

MIN_LINE_CHARS = 12        # shorter lines (`m = m_new`, `return o, lse`) are no evidence of a leak
MIN_EXPRESSION_CHARS = 12  # whitespace removed
MIN_EXPRESSION_NODES = 6
MIN_FORM_NODES = 6
MAX_NODES = 60             # no solution line is longer: larger code is compared by its parts

# Solution lines that restate what every student notebook gives in words, each with where.
GIVEN_LINES = {
    "scale = 1.0 / math.sqrt(q.shape[-1])": "the softmax scale 1/sqrt(D), stated in every chapter",
    "group = n_q_heads // n_kv_heads": "problem 5's docstring: runs of n_q_heads // n_kv_heads query heads",
}

# Forms (see `form`) that the chapters state in their text, each with where; the code that checks
# an answer has them too.
GIVEN_FORMS = {
    "v0 >= v1 - (v2 - 1)": "the window's first key i - (W - 1): problems 1 and 6, section 2's formula",
    "(v0 < v1) & (v0 <= v2)": "a sink is causal, (j < S) and (j <= i): problems 1 and 6, section 2's formula",
    "(v0 <= v1) & (v0 > v1 - v2)": "the window, (j <= i) and (j > i - W): problem 6, section 2's formula",
    "(v0 <= v1) & (v2 | v3)": "the seed's mask, causal and (window or sink): problem 1, section 2's formula",
    "v0 * v1 * v2 * v2": "the score matrix is (B, H, L, L): problem 1's chapter",
    "v0 * v1 * v2 * v2 * v3.itemsize": "the score matrix's bytes, (B, H, L, L) of dtype.itemsize: problem 1",
    "1.0 / @sqrt(v0)": "the softmax scale 1/sqrt(D), stated in every chapter",
    "1.0 / @sqrt(v0.shape[-1])": "the softmax scale 1/sqrt(D), stated in every chapter",
    "@sqrt(v0.shape[-1])": "the softmax scale 1/sqrt(D), stated in every chapter",
    "v0.shape[1] // v1.shape[1]": "the group size Hq // Hkv: problems 1 and 5's chapters",
    "v0.transpose(-1, -2)": "K^T, the definition of attention in every chapter",
    "v0 @ v1.transpose(-1, -2)": "the scores Q K^T, the definition of attention in every chapter",
    "v0.float().transpose(-1, -2)": "the scores Q K^T, the definition of attention in every chapter",
    "v0 @ v1.transpose(-1, -2) * v2": "the scaled scores Q K^T / sqrt(D), in every chapter",
    "@softmax(v0, dim=-1)": "PyTorch's softmax over the last dimension, the peer every softmax is timed against",
    "@min(v0 + v1, v2)": "the end of a tile, clipped to the sequence: every tiling picture and loop",
}

# Functions that do the same whatever module they come from, by the name a form gives them.
_MODULES = {"tl", "torch", "math", "np", "numpy", "F"}
_BUILTINS = {"min", "max", "abs", "cdiv"}
_ALIASES = {"maximum": "max", "minimum": "min", "amax": "max", "amin": "min", "exp2": "exp"}
_COUNTED = (ast.Name, ast.Constant, ast.BinOp, ast.Call, ast.Compare, ast.Subscript, ast.UnaryOp, ast.BoolOp,
            ast.Attribute, ast.IfExp)


def normalise(line: str) -> str:
    return " ".join(line.split())


def _squash(text: str) -> str:
    return "".join(text.split())


def _is_module(node) -> bool:
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) and node.id in _MODULES


class _Form(ast.NodeTransformer):
    """Names become v0, v1, ... in order of appearance; tl.minimum, torch.minimum and min become @min."""

    def __init__(self):
        self.names: dict[str, str] = {}

    def visit_Name(self, node):
        return ast.Name(self.names.setdefault(node.id, f"v{len(self.names)}"), ast.Load())

    def visit_Call(self, node):
        func = node.func
        name = None
        if isinstance(func, ast.Attribute) and _is_module(func.value):
            name = func.attr
        elif isinstance(func, ast.Name) and func.id.lstrip("_") in _BUILTINS:
            name = func.id.lstrip("_")
        if name is not None:
            node.func = ast.Name("@" + _ALIASES.get(name, name), ast.Load())
        elif isinstance(func, ast.Attribute):
            node.func = ast.Attribute(self.visit(func.value), _ALIASES.get(func.attr, func.attr), ast.Load())
        else:
            node.func = self.visit(func)
        node.args = [self.visit(a) for a in node.args]
        node.keywords = [ast.keyword(k.arg, self.visit(k.value)) for k in node.keywords]
        return node


def form(expression: ast.expr) -> str:
    """The expression up to the names it uses and the module its functions come from."""
    return ast.unparse(_Form().visit(copy.deepcopy(expression)))


def _size(expression: ast.expr) -> int:
    return sum(isinstance(n, _COUNTED) for n in ast.walk(expression))


def _expressions(tree, min_nodes: int, max_nodes: int = 10**9):
    """The expressions in tree (tuples and lists aside) of min_nodes to max_nodes counted nodes."""
    sizes: dict[int, int] = {}

    def count(node) -> int:  # every node's size in one pass, children first
        sizes[id(node)] = int(isinstance(node, _COUNTED)) + sum(count(c) for c in ast.iter_child_nodes(node))
        return sizes[id(node)]

    count(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.expr) and not isinstance(node, (ast.Tuple, ast.List)) \
                and min_nodes <= sizes[id(node)] <= max_nodes:
            yield node


def _parse(text: str):
    try:
        return ast.parse(text)
    except SyntaxError:
        return None


def _parse_line(line: str):
    """A solution line as code: a statement, the header of a block (`for ...:`), or an expression."""
    if line.endswith(":"):
        return _parse(line + " pass")
    return _parse(line) or _parse("(" + line + ")")


def _code_of_cell(source: str):
    return _parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))


def _regions(source_nb):
    """(secret lines, solution lines, lines outside any region) of one source notebook."""
    secret, solution, public, inside = [], [], set(), ""
    for cell in source_nb.cells:
        for raw in cell.source.splitlines():
            line = normalise(raw)
            if line.startswith("### BEGIN SOLUTION"):
                inside = "solution"
            elif line.startswith("### BEGIN HIDDEN TESTS"):
                inside = "hidden"
            elif line.startswith(("### END SOLUTION", "### END HIDDEN TESTS")):
                inside = ""
            elif inside:
                secret.append(line)
                if inside == "solution":
                    solution.append(line.split(" #")[0].strip())
            else:
                public.add(line)
    return secret, solution, public


def _trivial(line: str) -> bool:
    """Blank, `pass`, comments, brackets, short lines, a call's opening line, reading a shape, and
    lines that neither assign nor call (`if is_causal:`, `return o, lse`): any attention code has them."""
    return (len(line) < MIN_LINE_CHARS or line.startswith("#") or line == "pass"
            or not re.search(r"[A-Za-z0-9]", line) or not re.search(r"[=(]", line)
            or line.endswith(("[", "(", "{", ","))
            or re.fullmatch(r"[\w, ]+ = \w+\.shape(\[-?\d\])?", line) is not None
            or line.split(" #")[0].strip() in GIVEN_LINES)


@dataclass
class Secrets:
    """What must not appear in the edition, each with the problem it answers."""
    lines: dict[str, str] = field(default_factory=dict)        # normalised line -> problem
    expressions: dict[str, str] = field(default_factory=dict)  # whitespace-free expression -> problem
    forms: dict[str, tuple[str, str]] = field(default_factory=dict)  # form -> (problem, the expression)

    def __len__(self) -> int:
        return len(self.lines) + len(self.expressions) + len(self.forms)


def secrets(repo: Path = REPO_ROOT) -> Secrets:
    """Every secret line, solution expression and solution form that no student notebook shows."""
    import nbformat

    from . import problems

    public_lines: set[str] = set()
    public_text, public_forms = "", set[str]()
    for released in sorted(repo.glob("notebooks/*/*.ipynb")):
        nb = nbformat.read(str(released), as_version=4)
        public_text += _squash("\n".join(cell.source for cell in nb.cells))  # prose and formulas too
        for cell in nb.cells:
            public_lines.update(normalise(line) for line in cell.source.splitlines())
            tree = _code_of_cell(cell.source) if cell.cell_type == "code" else None
            if tree is not None:
                public_forms.update(form(e) for e in _expressions(tree, 1, MAX_NODES))
    found = Secrets()
    for assignment in problems.ASSIGNMENTS:
        source = nbformat.read(str(problems.source_notebook_path(assignment, repo)), as_version=4)
        secret, solution, outside = _regions(source)
        for line in secret:
            if not _trivial(line) and line not in public_lines and line not in outside:
                found.lines.setdefault(line, assignment)
        for line in solution:
            tree = _parse_line(line) if line and not _trivial(line) else None
            if tree is None:
                continue
            for expression in _expressions(tree, min(MIN_EXPRESSION_NODES, MIN_FORM_NODES)):
                text = _squash(ast.unparse(expression))
                shape = form(expression)
                if shape in public_forms or shape in GIVEN_FORMS:
                    continue
                if _size(expression) >= MIN_EXPRESSION_NODES and len(text) >= MIN_EXPRESSION_CHARS \
                        and text not in public_text:
                    found.expressions.setdefault(text, assignment)
                if _size(expression) >= MIN_FORM_NODES:
                    found.forms.setdefault(shape, (assignment, ast.unparse(expression)))
    return found


def _members(name: str, data: bytes):
    """(name, text) of one file's contents: a zip's members one by one (a wheel; torch.save's archive,
    whose tensor storages are raw numbers and are left out), a notebook's cells, else the text."""
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for member in z.namelist():
                if not re.search(r"(^|/)data/\d+$", member):
                    yield from _members(f"{name}!{member}", z.read(member))
        return
    text = data.decode(errors="ignore")
    if name.endswith(".ipynb"):
        text = "\n".join("".join(cell["source"]) for cell in json.loads(text)["cells"])
    yield name, text


def _texts(root: Path):
    """(name, text) of every file under root (see _members)."""
    for path in sorted(p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts):
        yield from _members(str(path.relative_to(root)), path.read_bytes())


def leaks(root: Path, found: Secrets) -> dict[str, list[str]]:
    """{file: [what it holds, and the problem that answers]} over every file under root."""
    report: dict[str, list[str]] = {}
    for name, text in _texts(root):
        hits = []
        normalised = "\n".join(normalise(line) for line in text.splitlines())
        hits += [f"line of {found.lines[s]}: {s}" for s in found.lines if s in normalised]
        squashed = _squash(text)
        hits += [f"expression of {found.expressions[s]}: {s}" for s in found.expressions if s in squashed]
        tree = _parse(text) if name.endswith(".py") else None
        if tree is not None:
            for expression in _expressions(tree, MIN_FORM_NODES, MAX_NODES):
                shape = form(expression)
                if shape in found.forms:
                    problem, solution = found.forms[shape]
                    hits.append(f"{problem}'s `{solution}` as `{ast.unparse(expression)}` "
                                f"(line {expression.lineno})")
        if hits:
            report[name] = sorted(set(hits))
    return report
