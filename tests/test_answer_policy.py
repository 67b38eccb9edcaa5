"""The answer-cell policy (autograder/grading/answer_policy.py): what it accepts, what it rejects.

Accepted: every problem's reference answer cell, every released stub, every bundled sample's
answer cell except the ones that tamper on purpose, and plausible student code. Rejected, each
with its code and line: the ways out of a jit body or a plain function that a name blacklist let
through (defaults and annotations that run when the cell runs, `triton.compiler.compiler.os`,
`tl.core.builtins`, dunders, reflection builtins, printing, imports, classes, stores, ...).
"""
from __future__ import annotations

import math
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
import torch
import triton
import triton.language as tl

from autograder import problems
from autograder.grading import answer_policy
from autograder.grading.answer_policy import Violation, describe, violations
from autograder.grading.samples import ADVERSARIAL, GPU_FAULTS, PERFORMANCE, SAMPLES, build_submission
from autograder.notebook_code import cell_by_id, read, strip_markers

REPO_ROOT = Path(__file__).resolve().parent.parent


def _policy(assignment):
    return problems.get_spec(assignment).answer_policy


def _notebooks(assignment):
    spec = problems.get_spec(assignment)
    return (read(REPO_ROOT / "solutions" / assignment / spec.notebook),
            read(REPO_ROOT / "notebooks" / assignment / spec.notebook))


_NOTEBOOKS = {a: _notebooks(a) for a in problems.ASSIGNMENTS}


def _bundled_samples():
    for assignment in problems.ASSIGNMENTS:
        for sample in (*SAMPLES[assignment], *ADVERSARIAL[assignment], *GPU_FAULTS[assignment],
                       *PERFORMANCE[assignment]):
            if sample.raw is None and not sample.missing:  # those hand in no notebook at all
                yield assignment, sample


def _sample_answer(assignment, sample):
    """The answer cell as the sample's student hands it in (samples.build_submission)."""
    spec = problems.get_spec(assignment)
    source_nb, release_nb = _NOTEBOOKS[assignment]
    nb = build_submission(sample, source_nb, release_nb, spec.student_cell, spec.kernel_cells[-1])
    return cell_by_id(nb, spec.student_cell).source


# ------------------------------------------------------------------ what the course must accept
@pytest.mark.parametrize("assignment", problems.ASSIGNMENTS)
def test_reference_answer_cells_pass_their_policy(assignment):
    source_nb, _ = _NOTEBOOKS[assignment]
    cell = cell_by_id(source_nb, problems.get_spec(assignment).student_cell).source
    assert describe(violations(strip_markers(cell), _policy(assignment))) == []
    assert violations(cell, _policy(assignment)) == []  # the markers are comments


@pytest.mark.parametrize("assignment", problems.ASSIGNMENTS)
def test_released_stubs_pass_so_the_checks_say_not_implemented(assignment):
    """nbgrader's stub is `raise NotImplementedError()`, sometimes followed by the lines that
    return names the stub never assigns (`return o, lse`): dead code, accepted."""
    _, release_nb = _NOTEBOOKS[assignment]
    stub = cell_by_id(release_nb, problems.get_spec(assignment).student_cell).source
    assert "raise NotImplementedError()" in stub
    assert describe(violations(stub, _policy(assignment))) == []


def test_policies_of_the_problems():
    assert {a: _policy(a) for a in problems.ASSIGNMENTS} == {
        "problem1": "torch", "problem2": "torch", "problem2b": "triton", "problem3": "triton", "problem4": "triton",
        "problem5": "triton", "problem6": "triton", "problem7": "triton",
        "problem8": "triton"}


_SAMPLES = list(_bundled_samples())


@pytest.mark.parametrize("assignment,sample", _SAMPLES, ids=[f"{a}-{s.name}" for a, s in _SAMPLES])
def test_bundled_sample_answer_cells(assignment, sample):
    """Every sample's answer cell is accepted, except the ones the course marks "answer cell
    rejected" (they append an import and a patch or a PyTorch wrapper to the answer cell)."""
    found = violations(_sample_answer(assignment, sample), _policy(assignment))
    if sample.expected_note == "answer cell rejected":
        assert found, f"{assignment}/{sample.name} should be rejected"
        assert all(line.startswith("line ") for line in describe(found))
    else:
        assert found == [], describe(found)


def test_some_samples_are_rejected_and_only_those_marked_so():
    rejected = {(a, s.name) for a, s in _SAMPLES if violations(_sample_answer(a, s), _policy(a))}
    marked = {(a, s.name) for a, s in _SAMPLES if s.expected_note == "answer cell rejected"}
    assert rejected == marked and ("problem3", "patch_in_answer_cell") in rejected
    assert len(_SAMPLES) - len(rejected) >= 40


# ------------------------------------------------------------------ plausible student code
TRITON_OK = [
    # problem 3 written the other common ways: tl.exp2, in-place updates, keyword arguments
    '''
@triton.jit
def online_softmax_update(acc, l_i, m_i, qk, v, key_idx, seq_len_k, qk_scale, MASK_KEYS: tl.constexpr):
    """docstring"""
    if MASK_KEYS:
        qk = tl.where(key_idx[None, :] < seq_len_k, qk, -float("inf"))
    qk = qk * qk_scale
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(qk - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc *= alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc=acc)
    return acc, l_i, m_new


@triton.jit
def finalize(acc, l_i, m_i):
    return acc / l_i[:, None], (m_i + tl.log2(l_i)) * LN_2
''',
    # constants, a helper, loops, both branches of an if, static checks
    '''
"""My helpers."""
SCALE = 2
NEG = -1.5
NAME = "x"
FLAG: tl.constexpr = True
BLOCK = tl.constexpr(64)


@triton.jit
def helper(x, n, BLOCK_N: tl.constexpr = 16):
    tl.static_assert(BLOCK_N >= 16, "tile too small")
    total = tl.zeros([BLOCK_N], dtype=tl.float32)
    for i in range(0, n, BLOCK_N):
        total += x.to(tl.float32)
    for j in tl.range(0, n, BLOCK_N, num_stages=2):
        total = total + 1.0
    for k in tl.static_range(2):
        total = total * 0.5
    if n > 4:
        y = tl.full([BLOCK_N], 1, tl.int32)
    else:
        y = tl.zeros([BLOCK_N], dtype=tl.int32)
    assert n >= 0, "negative"
    while n > 0:
        n = n // 2
    z = tl.math.exp2(total) if FLAG else total
    return z, y.T, helper2(min(n, SCALE), max(n, 1)), tl.cdiv(n, BLOCK_N)


@triton.jit
def helper2(a, b):
    pass
    return tl.minimum(a, b).to(tl.int64, bitcast=False) + LOG2_E * 0
''',
    # an untouched stub plus finished code in another function
    '''
@triton.jit
def kv_head(off_hq, n_q_heads, n_kv_heads):
    raise NotImplementedError()
    return off_hkv


@triton.jit
def program_coordinates(pid, n_m_blocks, n_q_heads, n_kv_heads):
    group = n_q_heads // n_kv_heads
    return pid // group, pid % group, kv_head(pid, n_q_heads, n_kv_heads)
''',
]

TORCH_OK = [
    '''
def tiled_attention(q: torch.Tensor, k, v, block_n: int = 64, *, eps=1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """docstring"""
    if block_n <= 0:
        raise ValueError(f"block_n must be positive, got {block_n!r}")
    b, h, n, d = q.shape
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=torch.float32, device=q.device)
    m = torch.full(q.shape[:-1], -math.inf, device=q.device)
    with torch.no_grad():
        for i, start in enumerate(range(0, k.shape[2], block_n)):
            s = q.float() @ k[:, :, start:start + block_n].float().transpose(-1, -2) / math.sqrt(d)
            out[:, :, :, 0] += s.amax(dim=-1)
            m = torch.maximum(m, s.max(dim=-1).values)
    lo = torch.finfo(q.dtype).min
    sizes = [x.numel() for x in (q, k, v) if x is not None]
    pairs = {name: t.dtype for name, t in zip(("q", "k"), (q, k))}
    s = torch.where(torch.isinf(m), lo, m)
    del s
    assert isinstance(block_n, int), "block_n"
    return out.to(q.dtype), m, sizes, pairs
''',
    '''
def create_mask_bool(seq_len, window_size, sink_size, device=None):
    idx = torch.arange(seq_len, device=device)
    mask = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
    mask[:, sink_size:] &= idx[None, sink_size:] > idx[:, None] - window_size
    return mask


def score_matrix_bytes(batch, heads, seq_len, dtype):
    return batch * heads * seq_len ** 2 * torch.tensor([], dtype=dtype).element_size()
''',
]


@pytest.mark.parametrize("source", TRITON_OK)
def test_plausible_triton_answers_pass(source):
    assert describe(violations(source, "triton")) == []


@pytest.mark.parametrize("source", TORCH_OK)
def test_plausible_torch_answers_pass(source):
    assert describe(violations(source, "torch")) == []


# ------------------------------------------------------------------ attacks
J = "@triton.jit\ndef f(x):\n"   # a jit function whose body starts on line 3
P = "def f(x):\n"                # a plain function whose body starts on line 2

ATTACKS = [
    # (policy, source, code, line)
    ("triton", '@triton.jit\ndef f(x, y=tl.core.builtins.exec("import os")):\n    return x\n',
     "default_not_literal", 2),
    ("triton", "@triton.jit\ndef f(x, g=lambda: 0):\n    return x\n", "default_not_literal", 2),
    ("triton", '@triton.jit\ndef f(x: tl.constexpr(print("hi"))):\n    return x\n', "annotation", 2),
    ("triton", '@triton.jit\ndef f(x: open("/etc/passwd")):\n    return x\n', "annotation", 2),
    ("triton", "@triton.jit\ndef f(x) -> tl.tensor:\n    return x\n", "annotation", 2),
    ("triton", '@triton.jit(do_not_specialize=["x"])\ndef f(x):\n    return x\n', "decorator", 1),
    ("triton", "@triton.jit\n@functools.lru_cache\ndef f(x):\n    return x\n", "decorator", 2),
    ("triton", "@jit\ndef f(x):\n    return x\n", "decorator", 1),
    ("triton", "def f(x):\n    return x\n", "decorator", 1),
    ("triton", "@triton.jit\ndef f(*x):\n    return x\n", "signature", 2),
    ("triton", J + '    triton.compiler.compiler.os.system("id")\n', "name", 3),
    ("triton", J + "    return tl.core.builtins\n", "attribute", 3),
    ("triton", J + "    return tl.math.__dict__\n", "dunder", 3),
    ("triton", J + "    return x.__class__.__mro__\n", "dunder", 3),
    ("triton", J + '    return getattr(tl, "core")\n', "name", 3),
    ("triton", J + "    return globals()\n", "name", 3),
    ("triton", J + '    return __import__("os")\n', "dunder", 3),
    ("triton", J + '    exec("import os")\n', "name", 3),
    ("triton", J + "    print(x)\n", "name", 3),
    ("triton", J + '    tl.device_print("VERIFY", x)\n', "attribute", 3),
    ("triton", J + '    tl.static_print("All cases passed.")\n', "attribute", 3),
    ("triton", J + '    return tl.inline_asm_elementwise("trap;", "=r", [x], dtype=tl.int32, is_pure=False, pack=1)\n',
     "attribute", 3),
    ("triton", J + "    return tl.extra.cuda.libdevice.exp(x)\n", "attribute", 3),
    ("triton", J + "    return tl.softmax(x)\n", "attribute", 3),
    ("triton", J + "    return tl.float16.name\n", "attribute", 3),
    ("triton", J + "    m = tl.math\n    return m\n", "attribute", 3),
    ("triton", J + "    m = tl\n    return m\n", "name", 3),
    ("triton", J + "    return x.handle\n", "attribute", 3),
    ("triton", J + "    return f.fn\n", "attribute", 3),
    ("triton", J + "    return NotImplementedError.__init__.__globals__\n", "dunder", 3),
    ("triton", J + "    y = NotImplementedError\n    return y\n", "name", 3),
    ("triton", J + '    y = f"{x}"\n    return y\n', "expression", 3),
    ("triton", J + "    if (y := x) > 0:\n        return y\n", "expression", 3),
    ("triton", J + "    return tuple([x for x in range(3)])\n", "expression", 3),
    ("triton", J + "    g = lambda: 0\n    return g\n", "expression", 3),
    ("triton", J + "    import os\n    return x\n", "import", 3),
    ("triton", J + "    from os import system\n    return x\n", "import", 3),
    ("triton", J + "    global y\n    return x\n", "statement", 3),
    ("triton", J + "    def g():\n        pass\n    return x\n", "statement", 3),
    ("triton", J + "    with x:\n        pass\n", "statement", 3),
    ("triton", J + "    try:\n        pass\n    except Exception:\n        pass\n", "statement", 3),
    ("triton", J + "    del x\n", "statement", 3),
    ("triton", J + "    x[0] = 1\n    return x\n", "store", 3),
    ("triton", J + "    x.dtype = tl.float32\n    return x\n", "store", 3),
    ("triton", J + '    raise ValueError("no")\n', "raise", 3),
    ("triton", J + "    for i in x:\n        pass\n", "loop", 3),
    ("triton", J + "    for i in range(3):\n        break\n", "statement", 4),
    ("triton", J + "    tl = x\n    return tl\n", "shadowing", 3),
    ("triton", J + "    torch = x\n    return torch\n", "shadowing", 3),
    # a local read after the loop that assigned it: Triton would look the name up among the globals
    ("triton", J + "    for i in range(1):\n        getattr = x\n    return getattr(tl, 'core')\n", "unassigned", 5),
    ("triton", J + "    y = z\n    z = x\n    return y\n", "unassigned", 3),
    ("triton", J + "    if x > 0:\n        y = x\n    return y\n", "unassigned", 5),
    # dead code after the stub's raise is still checked, only unassigned names are let through
    ("triton", J + "    raise NotImplementedError()\n    return torch.load(x)\n", "name", 4),
    ("triton", J + "    raise NotImplementedError()\n    return tl.core\n", "attribute", 4),
    # the top level
    ("triton", "open('x')\n", "statement", 1),
    ("triton", 'N = int("3")\n', "constant", 1),
    ("triton", "X = tl.core\n", "constant", 1),
    ("triton", 'X = tl.constexpr(open("f").read())\n', "constant", 1),
    ("triton", "X: tl.tensor = 3\n", "annotation", 1),
    ("triton", "tl.core = 3\n", "store", 1),
    ("triton", "__builtins__ = None\n", "dunder", 1),
    ("triton", "import os\n", "import", 1),
    ("triton", "class A:\n    pass\n", "statement", 1),
    ("triton", "if True:\n    X = 1\n", "statement", 1),
    ("triton", "async def f(x):\n    return x\n", "statement", 1),
    ("triton", "@triton.jit\ndef range(x):\n    return x\n", "shadowing", 2),
    ("triton", "@triton.jit\ndef f(x):\n    return x +\n", "syntax", 3),
    # the torch policy
    ("torch", P + "    return torch.ops.aten.add(x, x)\n", "attribute", 2),
    ("torch", P + "    return torch._C._get_tracing_state()\n", "attribute", 2),
    ("torch", P + '    return torch.load("weights.pt")\n', "attribute", 2),
    ("torch", P + '    torch.save(x, "leak.pt")\n', "attribute", 2),
    ("torch", P + "    return torch.utils.data\n", "attribute", 2),
    ("torch", P + "    return torch.nn.functional.scaled_dot_product_attention(x, x, x)\n", "attribute", 2),
    ("torch", P + "    return F.softmax(x, dim=-1)\n", "name", 2),
    ("torch", P + "    torch.manual_seed(0)\n", "attribute", 2),
    ("torch", P + "    return torch.isclose(x, x)\n", "attribute", 2),
    ("torch", P + "    return torch.float32.itemsize\n", "attribute", 2),
    ("torch", P + '    return os.system("id")\n', "name", 2),
    ("torch", "torch.Tensor.__add__ = lambda a, b: a\n", "store", 1),
    ("torch", "torch.softmax = print\n", "store", 1),
    ("torch", P + "    torch.softmax = x\n", "store", 2),
    ("torch", P + "    x[0] = 1\n", "store", 2),
    ("torch", P + "    x.grad = x\n", "store", 2),
    ("torch", P + '    setattr(torch, "softmax", x)\n', "name", 2),
    ("torch", P + "    return type(x)\n", "name", 2),
    ("torch", P + "    return ().__class__\n", "dunder", 2),
    ("torch", P + "    return x.grad_fn.next_functions\n", "attribute", 2),
    ("torch", P + "    return x.__dict__\n", "dunder", 2),
    ("torch", P + "    return x.apply_(abs)\n", "attribute", 2),
    ("torch", P + '    x.numpy().tofile("f")\n', "attribute", 2),
    ("torch", P + '    return "{0.__class__}".format(x)\n', "attribute", 2),
    ("torch", P + "    if (y := x) is None:\n        return y\n", "expression", 2),
    ("torch", P + "    g = lambda: 0\n    return g\n", "expression", 2),
    ("torch", P + "    print(x)\n", "name", 2),
    ("torch", P + "    y = [k for k in range(3)]\n    return k\n", "name", 3),
    ("torch", P + '    with open("f") as fh:\n        return fh\n', "statement", 2),
    ("torch", P + "    raise SystemExit(1)\n", "raise", 2),
    ("torch", P + "    import os\n", "import", 2),
    ("torch", P + "    return math.factorial(x)\n", "attribute", 2),
    ("torch", '@torch.no_grad()\ndef f(x):\n    return x\n', "decorator", 1),
    ("torch", 'def f(x, y=torch.load("p")):\n    return x\n', "default_not_literal", 1),
    ("torch", 'def f(x: open("p")):\n    return x\n', "annotation", 1),
    ("torch", "def sorted(x):\n    return x\n", "shadowing", 1),
    ("torch", "import torch.nn.functional as F\n", "import", 1),
    ("torch", "X = torch.zeros(3)\n", "constant", 1),
    ("torch", "@triton.jit\ndef f(x):\n    return x\n", "decorator", 1),
]


@pytest.mark.parametrize("policy,source,code,line", ATTACKS, ids=[f"{p}-{i}" for i, (p, *_) in enumerate(ATTACKS)])
def test_attacks_are_rejected_with_code_and_line(policy, source, code, line):
    found = violations(source, policy)
    assert (line, code) in [(v.line, v.code) for v in found], describe(found)


def test_enough_attacks():
    assert len(ATTACKS) >= 25
    assert len({code for _, _, code, _ in ATTACKS}) >= 15


def test_code_after_a_raise_or_return_may_name_unassigned_variables_only():
    """Nothing after a raise or return of the same block is ever evaluated (Python never gets
    there; Triton's code generator stops at a return and rejects a raise), so the stub's
    `return o, lse` passes; everything else there is still checked."""
    ok = [J + "    if x > 0:\n        raise NotImplementedError()\n        return o\n    return x\n",
          J + "    for i in range(3):\n        return x\n        y = zz\n",
          P + "    raise NotImplementedError()\n    return o.to(x.dtype), lse\n"]
    for source in ok:
        policy = "torch" if source.startswith(P) else "triton"
        assert violations(source, policy) == [], describe(violations(source, policy))
    # Not after the raise: the same name is an error.
    assert [v.code for v in violations(J + "    y = o\n    raise NotImplementedError()\n", "triton")] == ["name"]
    after_raise = violations(P + "    raise NotImplementedError()\n    return print(x)\n", "torch")
    assert [v.code for v in after_raise] == ["name"]


def test_unreadable_sources_are_syntax_violations():
    for source in ("X = 1\0", J + "    return x" + " + x" * 5000 + "\n", "def (:\n"):
        (found,) = violations(source, "triton")
        assert found.code == "syntax" and found.line >= 1


# ------------------------------------------------------------------ the API
def test_accepted_cell_has_no_violations_and_describe_formats_lines():
    assert violations(J + "    return tl.exp2(x)\n", "triton") == []
    assert describe([]) == []
    found = violations(J + "    return tl.core\n", "triton")
    assert found == [Violation(3, "attribute", found[0].message)]
    (line,) = describe(found)
    assert line.startswith("line 3: `tl.core` is not part of the allowed triton.language API"), line
    assert "tl.exp2" in line


def test_violations_are_sorted_by_line_and_frozen():
    found = violations("import os\n" + J + "    print(x)\n    return x.__class__\n", "triton")
    assert [v.line for v in found] == sorted(v.line for v in found)
    assert [v.code for v in found] == ["import", "name", "dunder"]
    with pytest.raises(FrozenInstanceError):
        found[0].line = 7


def test_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="unknown answer policy"):
        violations("X = 1\n", "numpy")


def test_verify_uses_this_policy():
    from autograder.grading import verify

    answer_cell_violations = getattr(verify, "answer_cell_violations", None)
    if answer_cell_violations is None:
        pytest.skip("verify.py no longer has answer_cell_violations")
    source = J + "    return tl.core\n"
    assert answer_cell_violations(source, "triton") == describe(violations(source, "triton"))


# ------------------------------------------------------------------ the allowlists themselves
@triton.jit
def _sample_jit(x):
    return x


def test_allowlisted_names_exist_in_the_installed_libraries():
    assert not [n for n in answer_policy.TL_ALLOWED if not hasattr(tl, n)]
    assert all(hasattr(tl.math, n) for n in answer_policy.TL_MATH_FUNCTIONS)
    assert all(hasattr(torch, n) for n in answer_policy.TORCH_ALLOWED)
    assert all(hasattr(math, n) for n in answer_policy.MATH_NAMES)
    tensor = torch.zeros(2, 2)
    assert all(hasattr(tensor, n) or n in {"eps", "tiny", "values", "indices"} for n in answer_policy.TORCH_VALUE_ATTRS)


def test_allowlists_leave_out_what_reaches_python_or_the_compiler():
    assert not answer_policy.TL_ALLOWED & {
        "core", "semantic", "standard", "extra", "math", "tensor", "dtype", "inline_asm_elementwise",
        "device_print", "static_print", "reduce", "associative_scan", "map_elementwise", "softmax", "tuple",
        "target_info", "make_tensor_descriptor"}
    assert not answer_policy.TORCH_ALLOWED & {
        "ops", "_C", "load", "save", "utils", "nn", "hub", "jit", "compile", "library", "Tensor", "cuda",
        "autograd", "backends", "manual_seed", "isclose", "allclose", "from_file", "set_default_dtype"}
    assert not any(n.startswith("_") for group in (answer_policy.TL_ALLOWED, answer_policy.TORCH_ALLOWED,
                                                    answer_policy.TRITON_VALUE_ATTRS, answer_policy.TORCH_VALUE_ATTRS)
                   for n in group)
    # Any value can be the base of a method call: no allowlisted attribute may be one that gives
    # more than arithmetic on the other objects a body can reach.
    reachable = set()
    for obj in (_sample_jit, tl.float16, tl.constexpr(1), int, float, str, tuple, range, type, torch.float32,
                torch.device("cpu"), torch.finfo(torch.float32), print, torch.exp):
        reachable |= {n for n in dir(obj) if not n.startswith("_")}
    for attrs in (answer_policy.TRITON_VALUE_ATTRS, answer_policy.TORCH_VALUE_ATTRS):
        assert attrs & reachable <= {"split", "logical_and", "logical_or", "itemsize", "is_floating_point",
                                     "eps", "tiny", "max", "min", "to", "dtype"}, sorted(attrs & reachable)
    danger = {"fn", "src", "run", "type", "value", "handle", "name", "to_ir", "format", "format_map", "mro",
              "grad_fn", "grad", "data", "storage", "untyped_storage", "data_ptr", "register_hook", "backward",
              "apply_", "map_", "set_", "numpy", "tolist", "cuda", "cpu", "signature", "module", "kernel"}
    assert not (answer_policy.TRITON_VALUE_ATTRS | answer_policy.TORCH_VALUE_ATTRS) & danger


def test_builtins_leave_out_reflection_and_output():
    banned = {"getattr", "setattr", "hasattr", "globals", "locals", "vars", "exec", "eval", "compile", "open",
              "print", "type", "object", "__import__", "input", "breakpoint", "memoryview", "help", "dir", "id"}
    assert not (answer_policy.TRITON_BUILTINS | answer_policy.TORCH_BUILTINS) & banned
