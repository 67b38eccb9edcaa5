"""The student edition: what `autograder publish DEST` writes, and what it leaves out.

The course repository (solutions, hidden tests, grading) stays private. The edition is a
repository of its own that students clone, open in Colab or install with pip: the student
notebooks, the student-facing part of the package, a README, environment.yml and pyproject.toml.
What ships is decided here, module by module:

* SHIPPED: copied as they are;
* RECORDED: shipped with some functions replaced by their recorded outputs (`autograder.recorded`),
  because the function's code would answer an exercise;
* EXCLUDED: left out, each with its reason.

Every module of the package must appear in exactly one of them (a test checks it), so a new module
is a decision, not an accident.
"""
from __future__ import annotations

import ast
import os
import shutil
from pathlib import Path

from . import edition_scan

REPO_ROOT = Path(__file__).resolve().parent.parent

SHIPPED = (
    "autograder/__init__.py",
    "autograder/__main__.py",
    "autograder/cli.py",             # `autograder env` and `bench`; the instructor commands say what they need
    "autograder/benchmark.py",
    "autograder/capstone/__init__.py",  # the capstone trains with the learner's own problem 7 kernels
    "autograder/capstone/attention.py",
    "autograder/capstone/dataset.py",
    "autograder/capstone/model.py",
    "autograder/capstone/train.py",
    "autograder/checks.py",
    "autograder/counted_cost.py",    # what performance.py counts under the interpreter (with a reference kernel)
    "autograder/device.py",
    "autograder/diagnose.py",
    "autograder/dispatch_mode.py",   # the op recorder and memory tracker, without importing torch._dynamo
    "autograder/feedback_run.py",    # the self-check and figures stand aside while a notebook is graded
    "autograder/hints.py",
    "autograder/inputs.py",
    "autograder/integrity.py",
    "autograder/kernel_module.py",
    "autograder/memory.py",
    "autograder/nan_trace.py",       # a NaN in the self-check says where the first one came from
    "autograder/notebook_code.py",
    "autograder/performance.py",
    "autograder/plots.py",
    "autograder/recorded.py",
    "autograder/tma.py",
    "autograder/validation.py",
    "autograder/verdict.py",
    "autograder/problems/__init__.py",
    "autograder/problems/spec.py",
    "autograder/problems/problem3.py",
    "autograder/problems/delta_faults.py",  # a wrong Delta, read from the gradients: the chapter's formulas
)

# Files of the package that are not modules, shipped as they are (pyproject's package-data).
SHIPPED_DATA = ("autograder/capstone/texts/tinyshakespeare.txt", "autograder/capstone/texts/README.md")

# module -> (functions replaced by recorded outputs, why)
RECORDED = {
    "autograder/references.py": (
        ("create_mask_bool", "repeat_kv", "attention_mask", "attention_reference", "naive_attention",
         "attention_grads_reference"),
        "create_mask_bool is problem 1's exercise word for word, and the float64 and naive attention "
        "(masks, GQA, log-sum-exp), and the autograd through it for the gradients, answer its naive_attention"),
    "autograder/problems/online_softmax_faults.py": (
        ("blockwise_attention",),
        "the block-wise attention is problem 2's tiled attention (and problem 3's recurrence) written out"),
    "autograder/problems/problem1.py": (
        ("_attention64",),
        "float64 attention with any mask and head map: problem 1's naive_attention"),
    "autograder/block_visits.py": (
        ("visible_key_ranges", "key_blocks", "minimal_visits"),
        "the closed-form key ranges of a causal, windowed or sink-masked query block are problems 4 and 6's "
        "exercise"),
    "autograder/problems/problem4.py": (
        ("_ranges_correct", "visit_weights", "reenact"),
        "the float64 re-enactment of the causal kernel's two stages holds problem 4's key ranges and "
        "diagonal mask, next to each typical mistake"),
    "autograder/problems/problem5.py": (
        ("expected_schedule",),
        "the launch order per program id is problem 5's second function, inverted"),
    "autograder/problems/problem6.py": (
        ("block_ranges", "visible_pairs", "_flex_peer", "_sdpa_dense_peer"),
        "the diagnoses' re-enactment computes problem 6's key_block_ranges (and each mistake next to it); "
        "the benchmark's pair count and its FlexAttention and dense-mask peers spell out the seed's mask "
        "rule, problem 1's create_mask_bool (in the edition the two peers are reported as skipped)"),
    "autograder/problems/problem2b.py": (
        ("reenact",),
        "the re-enacted row-wise kernel, right or with a mistake, is problem 2's online softmax written out"),
    "autograder/problems/problem7.py": (
        ("exact_parts", "reenact_backward"),
        "the float64 backward, exact and tile by tile, is problem 7's backward kernels' algorithm"),
    "autograder/problems/problem8.py": (
        ("kv_ranges", "exact_parts", "reenact_backward"),
        "the dK/dV program's query ranges are problem 8's query_block_ranges (next to each mistake), and the "
        "float64 backward of the group sum is its kernels' algorithm"),
    "autograder/problems/problem2.py": (
        ("softmax_reference", "simulate_online_softmax", "_dropped_tail"),
        "the one-pass softmax re-enacted in float64 is problem 2's online_softmax"),
}

# module (or folder) -> why it stays in the course repository
EXCLUDED = {
    "autograder/grading": "the grading pipeline: hidden tests, the judge, sample submissions made of solution lines",
    "autograder/edition.py": "publishes from solutions/: instructor only",
    "autograder/threads.py": "caps the threads of each grading task: the grading pipeline's",
    "autograder/edition_scan.py": "knows the solutions, to scan the edition for them: instructor only",
    "autograder/course_config.py": "names the course's private repository",
    "autograder/notebook_template.py": "writes the badge and setup cells into the source notebooks (instructor only)",
    "autograder/paired_sources.py": "keeps the source notebooks and their .py twins in line (instructor only)",
}


def package_modules(repo: Path = REPO_ROOT) -> list[str]:
    """Every module of the package, as a path relative to the repository."""
    return sorted(str(p.relative_to(repo)) for p in (repo / "autograder").rglob("*.py"))


def undecided(repo: Path = REPO_ROOT) -> list[str]:
    """Modules that none of SHIPPED, RECORDED, EXCLUDED decides about (should be empty)."""
    decided = set(SHIPPED) | set(RECORDED)
    return [m for m in package_modules(repo)
            if m not in decided and not any(m == e or m.startswith(e + "/") for e in EXCLUDED)]


def recorded_names() -> list[str]:
    """'module.function' of every recorded function."""
    return [path.removesuffix(".py").replace("/", ".") + "." + f for path, (fns, _) in RECORDED.items() for f in fns]


def replace_with_recordings(source: str, module: str, functions) -> str:
    """`source` with each named top-level function's body replaced by a lookup of its recorded output.

    The signature stays (callers bind arguments the same way); docstring, comments and body go.
    """
    tree = ast.parse(source)
    lines = source.splitlines()
    found = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in functions}
    missing = set(functions) - set(found)
    if missing:
        raise ValueError(f"{module}: no top-level function {sorted(missing)}")
    for name, node in sorted(found.items(), key=lambda kv: -kv[1].lineno):
        start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
        body_start = node.body[0].lineno - 1
        signature = [line for line in lines[start:body_start] if not line.strip().startswith("#")]
        stub = signature + [
            '    """Recorded outputs for the self-checks\' inputs (the code would answer an exercise)."""',
            f'    return _replay("{module}.{name}", locals())',
        ]
        lines[start:node.end_lineno] = stub
    # The import goes after the module docstring and `from __future__` (which must come first).
    anchor = 0
    for statement in tree.body:
        is_doc = (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
                  and statement is tree.body[0])
        if is_doc or (isinstance(statement, ast.ImportFrom) and statement.module == "__future__"):
            anchor = statement.end_lineno or anchor
        else:
            break
    lines.insert(anchor, "from autograder.recorded import replay as _replay")
    return "\n".join(lines) + "\n"


# --- recording: run the reference through every visible check ----------------------------------

def _filled_in_notebook_code(assignment: str, repo: Path) -> str:
    """The student notebook with the reference answer in its cell, as one Python module."""
    from . import problems
    from .grading.samples import SAMPLES, build_submission
    from .notebook_code import read

    spec = problems.get_spec(assignment)
    correct = next(s for s in SAMPLES[assignment] if s.name == "correct")
    nb = build_submission(correct, read(repo / "solutions" / assignment / spec.notebook),
                          read(repo / "notebooks" / assignment / spec.notebook), spec.student_cell,
                          spec.kernel_cells[-1])
    cells = [c.source for c in nb.cells if c.cell_type == "code"]
    return "\n\n".join(cells) + "\n"


def record_outputs(repo: Path = REPO_ROOT, assignments=None, log=print) -> dict:
    """Run every student notebook, filled in with the reference answer, and each problem's bundled
    wrong answers through its self-check, recording what the reference functions return."""
    import contextlib
    import io
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    from . import checks, device, problems, references
    from .inputs import make_qkv
    from .recorded import Recorder

    runtime = device.configure()
    recorder = Recorder(recorded_names())
    seen_cases: list = []
    original_run_case = checks.run_case

    def run_case(fn, case, *args, **kwargs):
        seen_cases.append(case)
        if kwargs.get("fresh_call"):  # the reference for the second call, which catches a cached answer
            q, k, v = make_qkv(checks.second_call_case(case), device=runtime.device)
            references.attention_reference(q, k, v, **case.mask_kwargs)  # (recording while inside)
        return original_run_case(fn, case, *args, **kwargs)

    chosen = assignments or problems.ASSIGNMENTS
    done: list = []
    # The notebooks run as they do in the edition, which has no reference kernel: no timing against
    # it (the grader measures the performance points), which records nothing anyway.
    overrides = dict(problems._REFERENCE_OVERRIDES)
    with recorder.recording():
        checks.run_case = run_case  # assert_cases calls it through the module
        for assignment in problems.ASSIGNMENTS:
            problems.set_reference_override(assignment, None)
        try:
            for assignment in chosen:
                log(f"recording {assignment}: the notebook with the reference answer")
                code = _filled_in_notebook_code(assignment, repo)
                with tempfile.TemporaryDirectory() as work, contextlib.redirect_stdout(io.StringIO()):
                    cwd = os.getcwd()
                    os.chdir(work)
                    try:
                        from .notebook_code import import_source

                        import_source(code, name_hint=f"edition_{assignment}")
                    finally:
                        os.chdir(cwd)
                _record_wrong_answers(assignment, repo, log)
                _record_diagnoses(assignment, [c for c in seen_cases if c not in done], runtime)
                done.extend(seen_cases)
            # A GPU checks Triton kernels in the dtypes the interpreter cannot (bfloat16): record the
            # reference for those inputs too.
            for case in dict.fromkeys(seen_cases):
                if case.torch_dtype not in runtime.dtypes:
                    q, k, v = make_qkv(case)
                    references.attention_reference(q, k, v, **case.mask_kwargs)
            # A learner may pick other tiles than the reference kernel: the minimal block visits of
            # every checked mask for every power-of-two tile from 16 to 256.
            from . import block_visits
            from .problems import problem6

            for n in (4096, 16384, 65536):  # problem 6's benchmark at its default shapes
                problem6.visible_pairs(n, 1024, 4)
            tiles = (16, 32, 64, 128, 256)
            for arguments in list(recorder.calls.get("autograder.block_visits.minimal_visits", ())):
                for block_m in tiles:
                    for block_n in tiles:
                        block_visits.minimal_visits(**{**arguments, "block_m": block_m, "block_n": block_n})
        finally:
            checks.run_case = original_run_case
            problems._REFERENCE_OVERRIDES.clear()
            problems._REFERENCE_OVERRIDES.update(overrides)
    log("recorded: " + ", ".join(f"{name.rsplit('.', 1)[-1]} {n} ({recorder.sizes[name] / 1e6:.1f} MB)"
                                 for name, n in sorted(recorder.counts.items())))
    return recorder.table


def _record_diagnoses(assignment: str, cases, runtime) -> None:
    """Each diagnosis of a Triton problem tried on an output that is wrong everywhere, for every
    case its notebook checked: every re-enactment a diagnosis may compare with gets recorded."""
    import contextlib

    from . import problems
    from .checks import LSE_TOLERANCE, TOLERANCES
    from .diagnose import diagnose_lse, diagnose_output
    from .inputs import make_qkv
    from .references import attention_reference

    module = problems.get(assignment)
    if problems.get_spec(assignment).answer_policy != "triton":
        return
    # (Problem 4's re-enactments, one per tile size and mistake, would outgrow the edition: there the
    # self-check falls back to the generic diagnosis.)
    diagnoses = list(getattr(module, "DIAGNOSES", ()))
    lse_diagnoses = list(getattr(module, "LSE_DIAGNOSES", ()))
    for case in dict.fromkeys(cases):
        if case.torch_dtype not in runtime.dtypes:
            case = case.with_dtype(str(runtime.default_dtype).replace("torch.", ""))
        q, k, v = make_qkv(case)
        ref_o, ref_lse = attention_reference(q, k, v, **case.mask_kwargs)
        wrong, wrong_lse = ref_o + 1.0, ref_lse + 1.0
        tol = TOLERANCES[q.dtype]
        for diagnose in diagnoses:
            with contextlib.suppress(Exception):
                diagnose(wrong, q, k, v, ref_o, case)
        with contextlib.suppress(Exception):
            diagnose_output(wrong, q, k, v, ref_o, tol.atol, tol.rtol, case)
        for diagnose in lse_diagnoses:
            with contextlib.suppress(Exception):
                diagnose(wrong_lse, q, k, v, ref_lse, case)
        with contextlib.suppress(Exception):
            diagnose_lse(wrong_lse, ref_lse, q, k, LSE_TOLERANCE.atol, case)


def _record_wrong_answers(assignment: str, repo: Path, log) -> None:
    """The problem's bundled wrong answers through its self-check (the PyTorch problems, problem 2b's
    softmax kernel and problem 7's backward), so the edition's self-check names those mistakes too."""
    import contextlib
    import io

    from . import problems
    from .checks import CheckFailed
    from .grading.samples import SAMPLES, sample_kernel_function

    spec = problems.get_spec(assignment)
    module = problems.get(assignment)
    if spec.answer_policy != "torch" and hasattr(module, "DIAGNOSES"):
        return  # the attention kernels' diagnoses: _record_diagnoses
    # An answer wrong everywhere first: every diagnosis then tries every re-enactment it knows.
    # (A diagnosis may fail on such an answer: what it recorded before failing is kept.)
    wrong = _wrong_everywhere(assignment)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
        if wrong:
            module.check(*wrong)
    for sample in SAMPLES[assignment]:
        if not sample.edits:
            continue
        log(f"recording {assignment}: {sample.name}")
        try:
            fn = sample_kernel_function(assignment, sample, repo)
        except Exception:  # noqa: BLE001 - a sample that does not even import has nothing to record
            continue
        answer_module = __import__("sys").modules.get(fn.__module__)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(CheckFailed):
            module.check(*_check_arguments(assignment, answer_module, fn))


def _wrong_everywhere(assignment: str):
    """Answers of the right shapes and dtypes that no diagnosis explains."""
    import torch

    def attention(q, k, v, is_causal=False, window_size=None, sink_size=None):
        o = torch.full_like(q, 0.5)
        return o, torch.full(q.shape[:-1], 3.0, dtype=torch.float32, device=q.device)

    if assignment == "problem1":
        return (attention, lambda n, w, s, device=None: torch.eye(n, dtype=torch.bool, device=device),
                lambda b, h, n, dtype: 1)
    if assignment == "problem2":
        return (lambda x, block_size: torch.full_like(x, 0.25), lambda q, k, v, block_n=64: attention(q, k, v))
    return ()


def _check_arguments(assignment: str, answer_module, fn):
    if assignment == "problem1":
        return (fn, getattr(answer_module, "create_mask_bool", None),
                getattr(answer_module, "score_matrix_bytes", None))
    if assignment == "problem2":
        return (getattr(answer_module, "online_softmax", None), getattr(answer_module, "tiled_attention", None))
    return (fn,)


# --- writing the edition -------------------------------------------------------------------------

# The edition's README: docs/student-edition-readme.md (kept with the docs, edited as one).
STUDENT_README = "docs/student-edition-readme.md"


def _pyproject(repo: Path) -> str:
    """The course's pyproject.toml, cut down to what a student installs."""
    import re

    text = (repo / "pyproject.toml").read_text()
    head = text.split("[project.optional-dependencies]")[0]
    head = re.sub(r'description = ".*"', 'description = "FlashAttention-2 in Triton: the student edition '
                                         '(notebooks, self-checks, hints, benchmarks)"', head)
    return (head + '[project.optional-dependencies]\nnotebooks = ["jupyterlab>=4", "ipykernel>=6"]\n\n'
            '[tool.setuptools.packages.find]\ninclude = ["autograder*"]\n\n'
            '[tool.setuptools.package-data]\nautograder = ["recorded_outputs.pt", "capstone/texts/*"]\n')


def _environment(repo: Path) -> str:
    """environment.yml without the instructor's tools, with JupyterLab to open the notebooks."""
    lines = (repo / "environment.yml").read_text().splitlines()
    head = ["# conda env create -f environment.yml && conda activate flash-attention-course",
            "# Without a GPU, torch's CPU-only wheel saves gigabytes: see README.md."]
    body = [line.replace("-e .[dev]", "-e .[notebooks]") for line in lines if not line.startswith("#")]
    return "\n".join(head + body) + "\n"


def publish(dest: Path, repo: Path = REPO_ROOT, log=print, table: dict | None = None) -> Path:
    """Write the student edition into `dest` and return it.

    The edition is written beside `dest` first and scanned (`edition_scan`): if it would give a
    solution away, LeakFound names what and where, and `dest` is left as it was. Otherwise `dest`
    is emptied, except for a .git folder (a clone of the student repository keeps its history),
    and receives the edition.
    """
    import tempfile

    dest = Path(dest).resolve()
    if undecided(repo):
        raise RuntimeError(f"edition.py decides nothing about {undecided(repo)}: ship, record or exclude each")
    if table is None:
        table = record_outputs(repo, log=log)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as staging:
        _write_edition(Path(staging), repo, table)
        found = edition_scan.leaks(Path(staging), edition_scan.secrets(repo))
        if found:
            raise LeakFound(dest, found)
        dest.mkdir(exist_ok=True)
        for entry in dest.iterdir():
            if entry.name != ".git":
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        for entry in Path(staging).iterdir():
            shutil.move(str(entry), dest / entry.name)
    log(f"wrote the student edition to {dest} ({len(table)} recorded outputs); no solution line, expression "
        f"or re-enactment of one in it")
    return dest


def _write_edition(dest: Path, repo: Path, table: dict) -> None:
    import torch

    shutil.copytree(repo / "notebooks", dest / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    for module in SHIPPED + SHIPPED_DATA:
        target = dest / module
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / module, target)
    for module, (functions, _why) in RECORDED.items():
        target = dest / module
        target.parent.mkdir(parents=True, exist_ok=True)
        name = module.removesuffix(".py").replace("/", ".")
        target.write_text(replace_with_recordings((repo / module).read_text(), name, functions))
    torch.save(table, dest / "autograder" / "recorded_outputs.pt")
    shutil.copy(repo / STUDENT_README, dest / "README.md")
    (dest / "pyproject.toml").write_text(_pyproject(repo))
    (dest / "environment.yml").write_text(_environment(repo))
    (dest / ".gitignore").write_text("__pycache__/\n*.egg-info/\nbuild/\n.ipynb_checkpoints/\n")


class LeakFound(RuntimeError):
    """The edition holds a solution line, one of its expressions, or code that computes it."""

    def __init__(self, dest: Path, found: dict[str, list[str]]):
        self.found = found
        lines = [f"  {name}: {hit}" for name, hits in found.items() for hit in hits]
        super().__init__(f"the edition would give solutions away, so nothing was written to {dest}. "
                         f"Reword, record or exclude what gives them:\n" + "\n".join(lines))
