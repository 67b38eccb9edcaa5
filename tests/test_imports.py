"""The package's import graph: no cycles, and every module imports on its own.

A cycle between two modules works only while one side imports the other inside a function, and
breaks as soon as someone moves that import to the top. So the graph below counts every import
of an `autograder` module, at module level and inside functions alike, and the modules a registry
loads by name (importlib.import_module).
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "autograder"

# Modules that load the modules of a package by name (importlib), as a registry: those modules may
# import their loader, since the loader imports none of them until asked. {(loader, package): why}
LOADERS_BY_NAME: dict[tuple[str, str], str] = {
    ("autograder.problems", "autograder.problems"):
        "the problem registry imports a problem's module when asked for it (problems.get); the "
        "problem modules use the registry's own functions",
    ("autograder.grading.samples", "autograder.grading.sample_sets"):
        "the sample registry loads each problem's sample set on first use; a sample set builds its "
        "samples from samples.Sample",
}

# Importing these runs them, so they are not imported here.
ENTRY_POINTS = {"autograder.__main__": "runs the command line when imported"}

# Optional or heavy dependencies that a module may import at module level only when listed here;
# everywhere else they are imported inside the function that needs them.
LAZY = ("ray", "nbgrader", "matplotlib")
NEEDS_AT_IMPORT: dict[str, set[str]] = {}


def module_files() -> dict[str, Path]:
    """{dotted name: file} for every module of the package."""
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = module_files()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _calls_import_module(call: ast.Call) -> bool:
    func = call.func
    return (isinstance(func, ast.Attribute) and func.attr == "import_module"
            and isinstance(func.value, ast.Name) and func.value.id == "importlib")


def _named_modules(arg, name: str, package: str) -> list[str]:
    """The modules `importlib.import_module(arg)` may load: a constant name, or every module of
    a package for f"{__name__}.{x}" / f"{__package__}.sub.{x}"."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if not isinstance(arg, ast.JoinedStr):
        return []
    prefix = ""
    for part in arg.values:
        if isinstance(part, ast.Constant):
            prefix += part.value
        elif isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name) \
                and part.value.id in ("__name__", "__package__") and not prefix:
            prefix = name if part.value.id == "__name__" else package
        else:
            break
    if not prefix.endswith("."):
        return []
    return [m for m in MODULES if m.startswith(prefix) and "." not in m[len(prefix):]]


def imported_modules(name: str) -> list[tuple[str, int, str]]:
    """(imported module, line, where: 'module level', 'in a function', 'by name, ...') for each
    import of a package module by module `name`. `from P import x` counts as importing P.x when that is a module,
    else P."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    package = name if _is_package(name) else name.rpartition(".")[0]
    found = []

    def add(target: str, node, where: str):
        if target in MODULES and target != name:
            found.append((target, node.lineno, where))

    def visit(node, where: str):
        for child in ast.iter_child_nodes(node):
            inner = "in a function" if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) \
                else where
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child, where)
            elif isinstance(child, ast.Call) and _calls_import_module(child):
                for target in _named_modules(child.args[0] if child.args else None, name, package):
                    add(target, child, f"by name, {where}")
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module or ""
                for alias in child.names:
                    if f"{source}.{alias.name}" in MODULES:
                        add(f"{source}.{alias.name}", child, where)
                    else:
                        add(source, child, where)
            visit(child, inner)

    visit(tree, "module level")
    return found


def import_graph() -> dict[str, dict[str, list[str]]]:
    """{importer: {imported: ['file:line (where)', ...]}}."""
    graph = {}
    for name in MODULES:
        edges = graph.setdefault(name, {})
        for target, line, where in imported_modules(name):
            edges.setdefault(target, []).append(f"{MODULES[name].relative_to(PACKAGE_DIR.parent)}:{line} ({where})")
    return graph


def strongly_connected(graph: dict) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def a_cycle(graph: dict, members: list[str]) -> list[str]:
    """One cycle through the first module of a strongly connected component: [a, b, ..., a]."""
    start, inside = members[0], set(members)
    paths, seen = [[start]], {start}
    while paths:  # breadth first, so the cycle shown is a shortest one
        path = paths.pop(0)
        for w in graph[path[-1]]:
            if w == start:
                return path + [start]
            if w in inside and w not in seen:
                seen.add(w)
                paths.append(path + [w])
    return members


def test_the_import_graph_sees_imports_inside_functions():
    """The graph must not miss the imports a cycle hides in: inside functions, relative or absolute."""
    edges = {target: where for target, _, where in imported_modules("autograder.cli")}
    assert edges.get("autograder.device") == "in a function"
    graph = import_graph()
    assert "autograder.grading.scratch" in graph["autograder.grading.autograde"]
    assert "autograder.checks" in graph["autograder.performance"]


def _describe(graph: dict, members: list[str]) -> str:
    cycle = a_cycle(graph, members)
    steps = [f"  {a} -> {b}: " + ", ".join(graph[a][b]) for a, b in zip(cycle, cycle[1:], strict=False)]
    return " -> ".join(cycle) + "\n" + "\n".join(steps)


def test_no_import_cycles():
    graph = import_graph()
    # Without the registries' loads by name, no module may reach itself again.
    plain = {a: {b: w for b, w in edges.items()
                 if not ((a, b.rpartition(".")[0]) in LOADERS_BY_NAME and all("by name" in x for x in w))}
             for a, edges in graph.items()}
    found = strongly_connected(plain)
    cycles = [_describe(plain, members) for members in found]
    # With them, a cycle may hold only a registry and the modules it loads: any other module in
    # it (say, one that a problem module imports and that imports the registry) is a cycle.
    for members in strongly_connected(graph):
        if any(set(seen) <= set(members) for seen in found):
            continue  # reported above
        if not any(set(members) <= {loader, package} | {m for m in MODULES if m.rpartition(".")[0] == package}
                   for loader, package in LOADERS_BY_NAME):
            cycles.append(_describe(graph, members))
    assert not cycles, "import cycles among the package's modules:\n" + "\n".join(cycles)


def test_the_registries_load_modules_by_name():
    """Each allowed load by name is still there (else its entry goes)."""
    graph = import_graph()
    for (loader, package), reason in LOADERS_BY_NAME.items():
        assert reason and any(b.rpartition(".")[0] == package and all("by name" in x for x in w)
                              for b, w in graph[loader].items()), (loader, package)


# --- every module imports on its own --------------------------------------------------------------

# One interpreter forks a child per module: each child imports that one module with no other
# module of the package loaded. The slowest third-party imports (torch, nbformat) happen once,
# before the forks, since every child would spend most of its time on them; none of them imports
# anything of LAZY (checked).
_IMPORT_EACH = r"""
import json, os, sys, traceback
import nbformat, numpy, torch, tqdm.auto  # noqa: F401, E401
assert not [m for m in sys.modules if m.split('.')[0] in ('autograder',) + LAZY]
for name in NAMES:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            __import__(name)
            report = {"error": None}
        except BaseException:
            report = {"error": traceback.format_exc()[-3000:]}
        report["lazy"] = sorted({m.split('.')[0] for m in sys.modules} & set(LAZY))
        os.write(write, json.dumps(report).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    print(json.dumps({name: json.loads(text) if text else {"error": "the import killed its process", "lazy": []}}))
"""


@pytest.fixture(scope="module")
def imported_alone():
    names = [n for n in MODULES if n not in ENTRY_POINTS]
    code = f"NAMES = {names!r}\nLAZY = {LAZY!r}\n" + _IMPORT_EACH
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900,
                          cwd=PACKAGE_DIR.parent, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            reports.update(json.loads(line))
    return reports


@pytest.mark.parametrize("name", [n for n in MODULES if n not in ENTRY_POINTS])
def test_each_module_imports_on_its_own(imported_alone, name):
    report = imported_alone[name]
    assert report["error"] is None, f"import {name} alone fails:\n{report['error']}"
    extra = set(report["lazy"]) - NEEDS_AT_IMPORT.get(name, set())
    assert not extra, f"importing {name} imports {sorted(extra)}: import it inside the function that needs it"


def test_reading_a_notebook_does_not_build_jsonschemas_iri_grammar():
    """course.sh removes jsonschema's optional IRI checker (rfc3987-syntax): it builds a Lark
    grammar whenever jsonschema is imported, 2.5 s in every nbgrader command, judge and notebook
    process, which made grading a submission about twice as slow."""
    code = "import sys, nbformat; print('rfc3987_syntax' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False", ("importing nbformat loads rfc3987_syntax: run `bash course.sh test` (its setup "
                               "removes it) or `pip uninstall rfc3987-syntax`")


def test_watching_a_call_does_not_import_torch_dynamo():
    """The op recorder and the memory tracker opt out of PyTorch's Dynamo wrapper
    (dispatch_mode.py), whose first call imports torch._dynamo: 2.3 s in each judge and notebook
    kernel, once per graded submission. The student's call still runs under both."""
    code = ("import sys, torch\n"
            "from autograder.integrity import watch_call\n"
            "from autograder.memory import PeakTensorMemory\n"
            "q = torch.randn(1, 2, 64, 16)\n"
            "with watch_call((q,)) as w, PeakTensorMemory() as m:\n"
            "    (q @ q.transpose(-1, -2)).softmax(-1)\n"
            "print(sorted(w.ops & {'softmax', '_softmax'}), m.peak_bytes > 0, 'torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0].endswith("True False"), out  # recorded, measured, and no Dynamo
    assert "softmax" in out[0], out
