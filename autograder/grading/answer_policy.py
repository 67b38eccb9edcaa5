"""Which answer cells the grader accepts: a sound allowlist, checked on the AST (nothing is run).

An answer cell is the one cell a student writes. The graded code that calls it is the course's,
so the cell must not be able to reach Python, the interpreter or the files through it:

  - "triton" (problems 2b-7): only `@triton.jit` functions, docstrings and literal constants.
    Triton's code generator evaluates names, attribute chains and calls of a jit body in Python at
    compile time (on a GPU), and under TRITON_INTERPRET=1 the body *is* Python, so every name,
    every attribute and every statement of a body is checked against what a kernel needs.
  - "torch" (problems 1-2): plain functions on tensors that may use an allowlisted part of
    `torch` and `math`.

Why an allowlist: a name blacklist is unsound (`tl.core.builtins.exec(...)` as a default value
runs when the cell runs; `triton.compiler.compiler.os` reaches `os`; `x.__class__.__mro__`
reaches every class). Here a name is one the cell binds itself, an allowlisted module or builtin,
or a violation; `module.<name>` must be on that module's list; any other attribute must be on a
short list of tensor methods (which no other reachable object has in a harmful form), and
attributes that start with `_` are never allowed.

    violations(source, policy) -> [Violation(line, code, message), ...]   (empty: accepted)
    describe(violations) -> ["line N: message", ...]

Codes: syntax, statement, import, decorator, signature, default_not_literal, annotation,
constant, name, dunder, attribute, expression, store, loop, raise, shadowing, unassigned.
"""
from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass

__all__ = ["Violation", "violations", "describe", "POLICIES"]

POLICIES = ("triton", "torch")


@dataclass(frozen=True)
class Violation:
    line: int
    code: str
    message: str


# --------------------------------------------------------------------------------------------
# The triton policy's allowlists (problems 2b-7). Built by hand from triton.language.__all__
# (Triton 3.x): math, memory and control for a kernel, nothing that reaches Python, the compiler
# or arbitrary machine code.
# Left out on purpose:
#   core, semantic, standard, extra, math (only as `tl.math.<fn>`, below), tensor, dtype,
#     block_type, pointer_type, constexpr_type, tuple, target_info, const, void: modules and
#     classes; their attributes reach the compiler and Python.
#   inline_asm_elementwise: arbitrary PTX/assembly.
#   device_print, static_print: output. A kernel has nothing to print for grading; the notebook
#     run shows the cell's output next to the test cells', where a print could imitate a test's
#     "All cases passed.", and device_print in a hot loop floods the run. (Python's `print` is
#     device_print in a jit body, so it is out too.)
#   reduce, associative_scan, map_elementwise: take a callable; no answer needs them.
#   softmax: the exercises *are* the (online) softmax; the course's integrity rules already bar
#     softmax/logsumexp/matmul shortcuts in the Triton problems.
#   make_tensor_descriptor, load_tensor_descriptor, store_tensor_descriptor: need a host-side
#     allocator hook; the locked kernels own the descriptors.
#   PropagateNan (an enum: its members would need a three-part chain), philox internals,
#     random-number helpers other than rand/randn/randint, to_tensor, slice, condition,
#     expect_zero, bitonic_merge.
# --------------------------------------------------------------------------------------------
TL_FUNCTIONS = frozenset({
    # indexing and creation
    "program_id", "num_programs", "arange", "zeros", "zeros_like", "full", "cdiv",
    # memory
    "load", "store", "make_block_ptr", "advance",
    "atomic_add", "atomic_max", "atomic_min", "atomic_and", "atomic_or", "atomic_xor", "atomic_xchg",
    "atomic_cas", "debug_barrier",
    # math
    "dot", "dot_scaled", "exp", "exp2", "log", "log2", "sqrt", "sqrt_rn", "rsqrt", "abs", "fma",
    "maximum", "minimum", "clamp", "where", "sigmoid", "erf", "sin", "cos", "floor", "ceil",
    "div_rn", "fdiv", "umulhi", "add", "sub", "mul", "cast",
    # reductions and scans
    "max", "min", "sum", "argmax", "argmin", "cumsum", "cumprod", "xor_sum", "reduce_or",
    "sort", "topk", "histogram", "gather", "flip",
    # shapes
    "reshape", "view", "trans", "permute", "broadcast", "broadcast_to", "expand_dims", "ravel",
    "squeeze", "unsqueeze", "split", "join", "interleave", "cat", "swizzle2d",
    # compiler hints, loops, assertions, constants
    "multiple_of", "max_contiguous", "max_constancy", "assume", "constexpr",
    "static_range", "range", "static_assert", "device_assert",
    "rand", "randn", "randint",
})
TL_DTYPES = frozenset({
    "float16", "bfloat16", "float32", "float64", "int1", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "float8e4nv", "float8e5", "float8e4b15", "float8e4b8",
    "float8e5b16", "TRITON_MAX_TENSOR_NUMEL",
})
TL_ALLOWED = TL_FUNCTIONS | TL_DTYPES
# `tl.math.<fn>` (the reference solutions write tl.math.exp2 / tl.math.log2): the functions of
# triton.language.math, nothing else of that module (its `core`, `wraps`, `T`, `List` are out).
TL_MATH_FUNCTIONS = frozenset({
    "abs", "ceil", "cos", "div_rn", "erf", "exp", "exp2", "fdiv", "floor", "fma", "log", "log2",
    "rsqrt", "sin", "sqrt", "sqrt_rn", "umulhi",
})
# `.<attr>` on a value in a jit body: tl.tensor members and attributes a kernel needs. Checked
# against what else a value can be there (constexpr, tl.dtype, JITFunction, int/float/str/tuple,
# the builtins float/int/range as objects): none of these names gives more than arithmetic on
# them (tests/test_answer_policy.py keeps it so). Out: handle, type, value, fn, src, run, name,
# to_ir, format, mro, reduce, associative_scan, store, advance, atomic_* (use tl.atomic_*).
TRITON_VALUE_ATTRS = frozenset({
    "to", "dtype", "shape", "T", "element_ty", "numel",
    "trans", "reshape", "view", "broadcast_to", "expand_dims", "permute", "ravel", "split", "flip",
    "sum", "max", "min", "argmax", "argmin", "cumsum", "cumprod", "xor_sum", "reduce_or", "sort",
    "exp", "exp2", "log", "log2", "sqrt", "sqrt_rn", "rsqrt", "abs", "sigmoid", "erf", "sin", "cos",
    "floor", "ceil", "cast", "cdiv", "logical_and", "logical_or",
})
# Python builtins Triton's code generator supports in a jit body (CodeGenerator.builtin_namespace:
# len, list, range, float, int, isinstance, getattr, hasattr, print, min, max), minus getattr and
# hasattr (reflection), print (see device_print), isinstance and list (no use in a kernel).
TRITON_BUILTINS = frozenset({"range", "min", "max", "float", "int", "len"})
# The imports cell of problems 3-7 defines these; answer cells use LN_2 (problem 3's finalize) and LOG2_E (problem 7).
COURSE_CONSTANTS = frozenset({"LN_2", "LOG2_E"})
TRITON_EXCEPTIONS = frozenset({"NotImplementedError"})  # only as `raise NotImplementedError(...)`

# --------------------------------------------------------------------------------------------
# The torch policy's allowlists (problems 1-2; the locked imports cell holds `import math` and
# `import torch`). Problem 1's reference is the naive attention, so softmax and logsumexp are in.
# Left out on purpose: nn (scaled_dot_product_attention and all of functional; `F` is not
# imported either), ops, _C, load, save, from_file, frombuffer (files, pickle), utils, hub, jit,
# compile, library, classes, backends, cuda, autograd, func, fx, export, distributed,
# multiprocessing (code and processes), Tensor (the class: patching), set_* and manual_seed,
# seed, rand, randn, randint, randperm, normal, bernoulli (global state the tests' inputs depend
# on), isclose, allclose, equal, testing (what the checks compare with).
# --------------------------------------------------------------------------------------------
TORCH_FUNCTIONS = frozenset({
    "zeros", "ones", "empty", "full", "arange", "linspace", "eye", "tril", "triu", "zeros_like",
    "ones_like", "full_like", "empty_like", "tensor", "as_tensor",
    "where", "exp", "exp2", "log", "log2", "log1p", "expm1", "sqrt", "rsqrt", "abs", "neg", "sign",
    "square", "maximum", "minimum", "max", "min", "amax", "amin", "sum", "mean", "prod", "cumsum",
    "clamp", "clip", "floor", "ceil", "round", "tanh", "sigmoid", "div", "mul", "add", "sub",
    "softmax", "log_softmax", "logsumexp", "matmul", "mm", "bmm", "einsum", "outer",
    "cat", "concat", "stack", "split", "chunk", "narrow", "reshape", "transpose", "permute",
    "unsqueeze", "squeeze", "flatten", "broadcast_to", "repeat_interleave", "gather", "index_select",
    "masked_fill", "isinf", "isnan", "isfinite", "isneginf", "isposinf", "nan_to_num",
    "logical_and", "logical_or", "logical_not", "eq", "ne", "lt", "le", "gt", "ge",
    "argmax", "argmin", "sort", "topk", "finfo", "iinfo", "is_tensor", "is_floating_point",
    "promote_types", "result_type", "no_grad", "inference_mode",
})
TORCH_DTYPES = frozenset({
    "float16", "half", "bfloat16", "float32", "float", "float64", "double", "bool", "int8", "int16",
    "int32", "int", "int64", "long", "uint8", "inf", "nan", "pi", "e",
})
TORCH_ALLOWED = TORCH_FUNCTIONS | TORCH_DTYPES
MATH_NAMES = frozenset({
    "sqrt", "inf", "nan", "pi", "e", "log", "log2", "log1p", "exp", "ceil", "floor", "isinf", "isnan",
    "isfinite", "fabs", "prod",
})
# `.<attr>` on a value in a torch answer: tensor methods and attributes, torch.Size/dtype/finfo
# attributes and the (values, indices) of torch.max. Out: grad_fn, grad, data, _base, storage,
# untyped_storage, data_ptr, register_hook, backward, apply_, map_, set_, as_strided, numpy,
# tolist, cpu, cuda, type, format, mro (reach autograd graphs, raw memory, callbacks or Python).
# In-place methods: only the common ones on a tensor the function made itself (masked_fill_ is
# in problem 1's reference).
TORCH_VALUE_ATTRS = frozenset({
    "shape", "size", "dim", "ndim", "dtype", "device", "itemsize", "element_size", "numel", "stride",
    "is_floating_point", "is_contiguous", "eps", "tiny", "values", "indices",
    "to", "float", "double", "half", "bfloat16", "bool", "int", "long", "type_as",
    "view", "view_as", "reshape", "reshape_as", "transpose", "permute", "contiguous", "expand",
    "expand_as", "unsqueeze", "squeeze", "flatten", "unflatten", "movedim", "t", "T", "mT", "narrow",
    "split", "chunk", "unbind", "repeat", "repeat_interleave", "tril", "triu", "diagonal",
    "max", "min", "amax", "amin", "sum", "mean", "prod", "cumsum", "argmax", "argmin", "sort", "topk",
    "exp", "exp2", "log", "log2", "log1p", "sqrt", "rsqrt", "abs", "neg", "sign", "clamp",
    "clamp_min", "clamp_max", "maximum", "minimum", "where", "masked_fill", "matmul", "mm", "bmm",
    "softmax", "log_softmax", "logsumexp", "isinf", "isnan", "isfinite", "any", "all", "eq", "ne",
    "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "nan_to_num", "clone",
    "detach", "new_zeros", "new_ones", "new_full", "new_empty", "item", "index_select", "gather",
    "masked_fill_", "fill_", "zero_", "copy_", "add_", "sub_", "mul_", "div_", "clamp_", "exp_",
})
TORCH_BUILTINS = frozenset({
    "range", "len", "min", "max", "abs", "float", "int", "bool", "enumerate", "zip", "isinstance",
    "tuple", "list", "dict", "sum", "any", "all", "round", "slice", "reversed", "sorted", "divmod",
})
TORCH_EXCEPTIONS = frozenset({
    "ValueError", "RuntimeError", "NotImplementedError", "TypeError", "AssertionError", "IndexError",
})
# Annotations of a plain function are evaluated when the cell runs: only these.
_TORCH_ANNOTATION_NAMES = frozenset({"int", "float", "bool", "str", "tuple", "list", "dict", "None"})
_TORCH_ANNOTATION_ATTRS = frozenset({"Tensor", "dtype", "device", "Size"})

# Names that no parameter, variable or top-level definition may take: the modules of the course's
# namespaces (a variable named like one would make `tl.x`, `torch.x` mean something else).
MODULE_NAMES = frozenset({
    "tl", "triton", "torch", "math", "F", "nn", "np", "numpy", "os", "sys", "builtins", "importlib",
    "subprocess", "autograder", "ctypes", "pickle", "shutil", "io", "pathlib", "inspect",
})
_PYTHON_BUILTINS = frozenset(dir(builtins))


@dataclass(frozen=True)
class _Module:
    members: frozenset
    submodules: dict
    describe: str


@dataclass(frozen=True)
class _Policy:
    name: str
    modules: dict            # name -> _Module
    builtins: frozenset
    constants: frozenset
    exceptions: frozenset
    value_attrs: frozenset
    jit: bool                # triton: @triton.jit functions, Triton's scoping and statements


_TRITON = _Policy(
    name="triton",
    modules={"tl": _Module(TL_ALLOWED, {"math": _Module(TL_MATH_FUNCTIONS, {}, "tl.math")},
                           "triton.language")},
    builtins=TRITON_BUILTINS, constants=COURSE_CONSTANTS, exceptions=TRITON_EXCEPTIONS,
    value_attrs=TRITON_VALUE_ATTRS, jit=True)
_TORCH = _Policy(
    name="torch",
    modules={"torch": _Module(TORCH_ALLOWED, {}, "torch"), "math": _Module(MATH_NAMES, {}, "math")},
    builtins=TORCH_BUILTINS, constants=frozenset(), exceptions=TORCH_EXCEPTIONS,
    value_attrs=TORCH_VALUE_ATTRS, jit=False)
_POLICY = {"triton": _TRITON, "torch": _TORCH}

_VALUE, _MEMBER = "value", "member"   # expression kinds; a module is ("module", "tl") or ("module", "tl.math")


def _short(node, limit: int = 60) -> str:
    try:
        text = ast.unparse(node)
    except Exception:  # pragma: no cover - unparse of a parsed tree does not fail
        text = type(node).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_literal(node) -> bool:
    """A number, string, True/False/None, or a signed number."""
    if isinstance(node, ast.Constant):
        return node.value is None or type(node.value) in (int, float, bool, str)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float)
    return False


def _is_tl_attr(node, attr: str) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == attr and isinstance(node.value, ast.Name)
            and node.value.id == "tl")


def _is_constexpr_literal(node) -> bool:
    """tl.constexpr(<literal>)."""
    return (isinstance(node, ast.Call) and _is_tl_attr(node.func, "constexpr") and len(node.args) == 1
            and not node.keywords and _is_literal(node.args[0]))


def _is_triton_jit(node) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "jit" and isinstance(node.value, ast.Name)
            and node.value.id == "triton")


def _bound_names(target) -> list:
    """Names an assignment target binds (Name, or tuples/lists/starred of them)."""
    if isinstance(target, ast.Name):
        return [target]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for elt in target.elts for n in _bound_names(elt)]
    if isinstance(target, ast.Starred):
        return _bound_names(target.value)
    return []


def _function_locals(fn) -> set:
    """Names a function body binds anywhere (Python: local for the whole body), not counting the
    targets of comprehensions, which have a scope of their own."""
    found = set()

    def visit(node):
        if isinstance(node, ast.comprehension):
            visit(node.iter)
            for cond in node.ifs:
                visit(cond)
            return  # its target is the comprehension's own
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            return  # rejected anyway; their names are not this function's
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            found.add(node.id)
        for child in ast.iter_child_nodes(node):
            visit(child)

    for stmt in fn.body:
        visit(stmt)
    return found


@dataclass
class _Ctx:
    defined: frozenset | None   # triton: names surely assigned here (None: not tracked)
    dead: bool                  # after a return/raise of the same block: never evaluated
    comp: frozenset = frozenset()


# Expressions whose only content is their operands (field names of each), walked alike.
_OPERANDS = {
    ast.BinOp: ("left", "right"), ast.UnaryOp: ("operand",), ast.BoolOp: ("values",),
    ast.Compare: ("left", "comparators"), ast.IfExp: ("test", "body", "orelse"),
    ast.Subscript: ("value", "slice"),
}


class _Checker:
    def __init__(self, policy: _Policy):
        self.p = policy
        self.found: list[Violation] = []
        self.cell_names: set = set()
        self.params: set = set()
        self.locals: set = set()

    def add(self, node, code: str, message: str):
        self.found.append(Violation(int(getattr(node, "lineno", 0) or 0), code, message))

    # ---------------------------------------------------------------- names that are bound
    def bind_ok(self, node, name: str, top_level: bool = False) -> bool:
        if name.startswith("__"):
            self.add(node, "dunder", f"`{name}`: names starting with `__` are never allowed in an answer cell")
            return False
        if name in MODULE_NAMES:
            self.add(node, "shadowing", f"`{name}` is a module name of the course; name this variable "
                                        f"something else")
            return False
        if top_level and name in _PYTHON_BUILTINS:
            self.add(node, "shadowing", f"`{name}` is a Python builtin; a top-level definition would "
                                        f"replace it for the graded code too. Choose another name")
            return False
        return True

    # ---------------------------------------------------------------- the cell
    def check_cell(self, tree: ast.Module):
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                self.cell_names.add(node.name)
            elif isinstance(node, ast.Assign):
                self.cell_names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                self.cell_names.add(node.target.id)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                self.check_function(node)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                self.add(node, "import", "imports are not allowed in the answer cell: the locked imports "
                                         "cell provides " + ("`tl`" if self.p.jit else "`torch` and `math`"))
            elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
                    and isinstance(node.value.value, str):
                continue  # a docstring or a bare string
            elif isinstance(node, ast.Pass):
                continue
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                self.check_constant(node)
            elif isinstance(node, (ast.ClassDef, ast.AsyncFunctionDef)):
                kind = "classes" if isinstance(node, ast.ClassDef) else "async functions"
                self.add(node, "statement", f"{kind} are not allowed; {self.what_belongs()}")
            else:
                self.add(node, "statement", f"`{_short(node)}` would run when the cell runs; "
                                            f"{self.what_belongs()}")

    def what_belongs(self) -> str:
        if self.p.jit:
            return ("only @triton.jit functions, docstrings and constants (NAME = literal or "
                    "NAME = tl.constexpr(literal)) belong in this cell")
        return "only plain functions, docstrings and constants (NAME = literal) belong in this cell"

    def check_constant(self, node):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            if not isinstance(target, ast.Name):
                self.add(node, "store", f"`{_short(target)} = ...`: only constants NAME = literal may be "
                                        f"assigned at the top level; attributes and items may never be")
                return
            self.bind_ok(target, target.id, top_level=True)
        if isinstance(node, ast.AnnAssign):
            if self.p.jit and not _is_tl_attr(node.annotation, "constexpr"):
                self.add(node, "annotation", f"a constant may only be annotated as `tl.constexpr`, "
                                             f"not `{_short(node.annotation)}`")
            elif not self.p.jit and not self.safe_annotation(node.annotation):
                self.add(node, "annotation", f"annotation `{_short(node.annotation)}` is not allowed "
                                             f"(use int, float, bool, str, torch.Tensor, ...)")
            if node.value is None:
                self.add(node, "constant", "a constant needs a value: NAME: tl.constexpr = literal")
                return
        value = node.value
        if _is_literal(value) or (self.p.jit and _is_constexpr_literal(value)):
            return
        allowed = "a literal or tl.constexpr(literal)" if self.p.jit else "a literal"
        self.add(node, "constant", f"top-level constants must be {allowed} (a number, a string, "
                                   f"True/False/None); `{_short(value)}` would be computed when the cell runs")

    # ---------------------------------------------------------------- functions
    def check_function(self, fn: ast.FunctionDef):
        self.check_decorators(fn)
        self.bind_ok(fn, fn.name, top_level=True)
        self.check_signature(fn)
        args = fn.args
        self.params = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
        self.params |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
        self.locals = _function_locals(fn)
        defined = frozenset(self.params) if self.p.jit else None
        self.block(fn.body, defined, dead=False)
        self.params, self.locals = set(), set()

    def check_decorators(self, fn):
        if not self.p.jit:
            for dec in fn.decorator_list:
                self.add(dec, "decorator", f"`{fn.name}` must be a plain function: no decorators "
                                           f"(`@{_short(dec)}` would run when the cell runs)")
            return
        if not fn.decorator_list:
            self.add(fn, "decorator", f"`{fn.name}` must be a @triton.jit function (decorated with "
                                      f"`@triton.jit`, written exactly so)")
        for i, dec in enumerate(fn.decorator_list):
            if _is_triton_jit(dec) and i == 0 and len(fn.decorator_list) == 1:
                continue
            if isinstance(dec, ast.Call) and _is_triton_jit(dec.func):
                self.add(dec, "decorator", "write `@triton.jit` without arguments: its options take "
                                           "callables and code that would run when the cell runs")
            elif _is_triton_jit(dec):
                self.add(dec, "decorator", "`@triton.jit` must be the function's only decorator")
            else:
                self.add(dec, "decorator", f"only `@triton.jit` may decorate a function here, not "
                                           f"`@{_short(dec)}`")

    def check_signature(self, fn):
        args = fn.args
        if self.p.jit and (args.posonlyargs or args.vararg or args.kwonlyargs or args.kwarg):
            self.add(fn, "signature", f"`{fn.name}`: a @triton.jit function takes plain parameters only "
                                      f"(no *args, **kwargs, `*` or `/` markers)")
        positional = args.posonlyargs + args.args
        pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults, strict=True))
        pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None]
        for arg, default in pairs:
            if not _is_literal(default):
                self.add(default, "default_not_literal",
                         f"the default of `{arg.arg}` must be a literal (a number, a string, True/False/None); "
                         f"`{_short(default)}` would be evaluated when the cell runs")
        every = positional + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a is not None]
        for arg in every:
            self.bind_ok(arg, arg.arg)
            if arg.annotation is None:
                continue
            if self.p.jit and not _is_tl_attr(arg.annotation, "constexpr"):
                self.add(arg.annotation, "annotation",
                         f"parameter `{arg.arg}` may only be annotated `tl.constexpr`, not `{_short(arg.annotation)}`")
            elif not self.p.jit and not self.safe_annotation(arg.annotation):
                self.add(arg.annotation, "annotation",
                         f"annotation `{_short(arg.annotation)}` of `{arg.arg}` is not allowed "
                         f"(annotations run when the cell runs; use int, float, bool, torch.Tensor, ...)")
        if fn.returns is not None:
            if self.p.jit:
                self.add(fn.returns, "annotation", f"`{fn.name}`: a @triton.jit function has no return annotation")
            elif not self.safe_annotation(fn.returns):
                self.add(fn.returns, "annotation", f"return annotation `{_short(fn.returns)}` is not allowed "
                                                   f"(use torch.Tensor, tuple[torch.Tensor, torch.Tensor], ...)")

    def safe_annotation(self, node) -> bool:
        if isinstance(node, ast.Constant):
            return node.value is None or isinstance(node.value, str)
        if isinstance(node, ast.Name):
            return node.id in _TORCH_ANNOTATION_NAMES
        if isinstance(node, ast.Attribute):
            return (isinstance(node.value, ast.Name) and node.value.id == "torch"
                    and node.attr in _TORCH_ANNOTATION_ATTRS)
        if isinstance(node, ast.Subscript):
            parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            return self.safe_annotation(node.value) and all(self.safe_annotation(p) for p in parts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self.safe_annotation(node.left) and self.safe_annotation(node.right)
        return False

    # ---------------------------------------------------------------- statements
    def block(self, stmts, defined, dead):
        """Check a statement list; returns the names surely assigned after it (triton)."""
        cur = defined
        for stmt in stmts:
            result = self.stmt(stmt, cur, dead)
            if not dead:
                cur = result
            # After a return or raise nothing of this block runs: Python never gets there, and
            # Triton's code generator stops at a return and rejects a raise.
            ends = (ast.Return, ast.Raise) if self.p.jit else (ast.Return, ast.Raise, ast.Break, ast.Continue)
            if isinstance(stmt, ends):
                dead = True
        return cur

    def stmt(self, st, defined, dead):
        ctx = _Ctx(defined, dead)
        jit = self.p.jit
        if isinstance(st, ast.Expr):
            if isinstance(st.value, ast.Constant):
                return defined
            if isinstance(st.value, ast.Call):
                self.expr(st.value, ctx)
                return defined
            self.add(st, "statement", f"`{_short(st)}`: an expression statement must be a call (e.g. tl.store(...))")
            return defined
        if isinstance(st, ast.Pass):
            return defined
        if isinstance(st, ast.Assign):
            self.expr(st.value, ctx)
            names = set()
            for target in st.targets:
                names |= self.target(target, ctx)
            return self.plus(defined, names)
        if isinstance(st, ast.AugAssign):
            self.expr(st.value, ctx)
            if isinstance(st.target, ast.Name):
                self.expr(ast.copy_location(ast.Name(st.target.id, ast.Load()), st.target), ctx)
                self.bind_ok(st.target, st.target.id)
                return self.plus(defined, {st.target.id})
            self.target(st.target, ctx)
            return defined
        if isinstance(st, ast.AnnAssign):
            if not isinstance(st.target, ast.Name):
                self.add(st, "store", f"`{_short(st.target)}`: only a plain name may be annotated")
                return defined
            if jit and not _is_tl_attr(st.annotation, "constexpr"):
                self.add(st, "annotation",
                         f"a variable may only be annotated `tl.constexpr`, not `{_short(st.annotation)}`")
            elif not jit and not self.safe_annotation(st.annotation):
                self.add(st, "annotation", f"annotation `{_short(st.annotation)}` is not allowed")
            if st.value is None:
                self.add(st, "statement", "an annotated name needs a value here")
                return defined
            self.expr(st.value, ctx)
            return self.plus(defined, self.target(st.target, ctx))
        if isinstance(st, ast.Return):
            if st.value is not None:
                self.expr(st.value, ctx)
            return defined
        if isinstance(st, ast.If):
            self.expr(st.test, ctx)
            then = self.block(st.body, defined, dead)
            other = self.block(st.orelse, defined, dead)
            return None if defined is None else frozenset(then & other)
        if isinstance(st, ast.For):
            return self.loop_for(st, ctx)
        if isinstance(st, ast.While):
            self.expr(st.test, ctx)
            self.block(st.body, defined, dead)
            if st.orelse:
                if jit:
                    self.add(st.orelse[0], "statement", "`while ... else` is not supported in a @triton.jit function")
                else:
                    self.block(st.orelse, defined, dead)
            return defined
        if isinstance(st, (ast.Break, ast.Continue)):
            if jit:
                self.add(st, "statement", f"`{_short(st)}` is not supported in a @triton.jit function")
            return defined
        if isinstance(st, ast.Raise):
            self.check_raise(st, ctx)
            return defined
        if isinstance(st, ast.Assert):
            self.expr(st.test, ctx)
            if st.msg is not None:
                self.expr(st.msg, ctx)
            return defined
        if isinstance(st, ast.With) and not jit:
            item = st.items[0] if len(st.items) == 1 else None
            ok = (item is not None and item.optional_vars is None and isinstance(item.context_expr, ast.Call)
                  and not item.context_expr.args and not item.context_expr.keywords
                  and isinstance(item.context_expr.func, ast.Attribute)
                  and isinstance(item.context_expr.func.value, ast.Name)
                  and item.context_expr.func.value.id == "torch"
                  and item.context_expr.func.attr in ("no_grad", "inference_mode"))
            if not ok:
                self.add(st, "statement", "the only `with` allowed is `with torch.no_grad():` "
                                          "(or torch.inference_mode())")
            else:
                assert item is not None  # ok says so
                self.expr(item.context_expr, ctx)
            return self.block(st.body, defined, dead)
        if isinstance(st, ast.Delete) and not jit:
            for target in st.targets:
                if not (isinstance(target, ast.Name) and target.id in self.locals and target.id not in self.params):
                    self.add(st, "statement",
                             f"`del {_short(target)}`: only the function's own variables may be deleted")
            return defined
        if isinstance(st, (ast.Import, ast.ImportFrom)):
            self.add(st, "import", "imports are not allowed in the answer cell, not even inside a function")
            return defined
        if isinstance(st, (ast.Global, ast.Nonlocal)):
            self.add(st, "statement", f"`{type(st).__name__.lower()}` statements are not allowed")
            return defined
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            kind = "classes" if isinstance(st, ast.ClassDef) else "nested functions"
            self.add(st, "statement", f"{kind} are not allowed inside a function; define helpers at the top "
                                      f"level" + (" with @triton.jit" if jit else ""))
            return defined
        name = {ast.Try: "try", ast.With: "with", ast.AsyncWith: "async with", ast.AsyncFor: "async for",
                ast.Delete: "del"}.get(type(st), type(st).__name__)
        if hasattr(ast, "TryStar") and isinstance(st, ast.TryStar):
            name = "try"
        self.add(st, "statement", f"`{name}` statements are not allowed in " +
                 ("a @triton.jit function" if jit else "an answer cell"))
        return defined

    @staticmethod
    def plus(defined, names):
        return None if defined is None else frozenset(defined | set(names))

    def loop_for(self, st, ctx):
        defined, dead = ctx.defined, ctx.dead
        if self.p.jit:
            it = st.iter
            func = it.func if isinstance(it, ast.Call) else None
            builtin_range = (isinstance(func, ast.Name) and func.id == "range" and func.id not in self.locals
                             and func.id not in self.params)
            is_range = builtin_range or _is_tl_attr(func, "range") or _is_tl_attr(func, "static_range")
            if not is_range:
                self.add(st, "loop", f"a @triton.jit loop runs over range(...), tl.range(...) or "
                                     f"tl.static_range(...), not `{_short(it)}`")
            if not isinstance(st.target, ast.Name):
                self.add(st, "loop", f"the loop variable must be a plain name, not `{_short(st.target)}`")
            if st.orelse:
                self.add(st.orelse[0], "statement", "`for ... else` is not supported in a @triton.jit function")
        self.expr(st.iter, ctx)
        names = self.target(st.target, ctx)
        self.block(st.body, self.plus(defined, names), dead)
        if st.orelse and not self.p.jit:
            self.block(st.orelse, defined, dead)
        return defined  # Triton drops names first bound inside a loop once it is over

    def check_raise(self, st, ctx):
        exc = st.exc
        func = exc.func if isinstance(exc, ast.Call) else exc
        ok = (isinstance(func, ast.Name) and func.id in self.p.exceptions
              and func.id not in self.locals and func.id not in self.params
              and (st.cause is None or (isinstance(st.cause, ast.Constant) and st.cause.value is None)))
        if not ok:
            if self.p.jit:
                msg = ("only `raise NotImplementedError()` (the released stub) may be raised in a "
                       "@triton.jit function")
            else:
                msg = (f"only `raise E(...)` with E one of {', '.join(sorted(self.p.exceptions))} "
                       f"is allowed")
            self.add(st, "raise", msg + (f", not `{_short(st)}`" if exc is not None else ""))
            return
        if isinstance(exc, ast.Call):
            self.call_arguments(exc, ctx)

    def target(self, target, ctx) -> set:
        """Check an assignment target; returns the names it binds."""
        if isinstance(target, ast.Name):
            return {target.id} if self.bind_ok(target, target.id) else set()
        if isinstance(target, (ast.Tuple, ast.List)):
            names = set()
            for elt in target.elts:
                names |= self.target(elt, ctx)
            return names
        if isinstance(target, ast.Starred) and not self.p.jit:
            return self.target(target.value, ctx)
        if isinstance(target, ast.Subscript) and not self.p.jit:
            base: ast.expr = target
            while isinstance(base, ast.Subscript):
                self.expr(base.slice, ctx)
                base = base.value
            if isinstance(base, ast.Name) and base.id in self.locals and base.id not in self.params:
                return set()
            self.add(target, "store", f"`{_short(target)} = ...`: only tensors the function created itself "
                                      f"(its own variables, not its parameters) may be assigned by index")
            return set()
        if isinstance(target, ast.Attribute):
            self.add(target, "store", f"`{_short(target)} = ...`: assigning to an attribute is never allowed")
            return set()
        if isinstance(target, ast.Subscript):
            self.add(target, "store", f"`{_short(target)} = ...`: Triton tensors cannot be assigned by index; "
                                      f"build the new value with tl.where(...)")
            return set()
        self.add(target, "store", f"`{_short(target)}` cannot be assigned to")
        return set()

    # ---------------------------------------------------------------- expressions
    def expr(self, node, ctx, as_base: bool = False):
        kind = self._expr(node, ctx, as_base)
        if isinstance(kind, tuple) and not as_base:
            what = kind[1]
            code = "name" if isinstance(node, ast.Name) else "attribute"
            self.add(node, code, f"`{what}` is a module: use it only as `{what}.<name>` (e.g. "
                                 f"{self.example(what)}), never store, pass or call it")
            return None
        return kind

    def example(self, module: str) -> str:
        return {"tl": "tl.exp2(x)", "tl.math": "tl.math.exp2(x)", "torch": "torch.exp(x)",
                "math": "math.sqrt(d)"}.get(module, f"{module}.<name>")

    def _expr(self, node, ctx, as_base):
        jit = self.p.jit
        if isinstance(node, ast.Name):
            return self.name(node, ctx)
        if isinstance(node, ast.Attribute):
            return self.attribute(node, ctx)
        if isinstance(node, ast.Constant):
            return _VALUE
        if isinstance(node, ast.Call):
            self.expr(node.func, ctx)
            self.call_arguments(node, ctx)
            return _VALUE
        if type(node) in _OPERANDS:  # operators: nothing to check but their operands
            for field in _OPERANDS[type(node)]:
                part = getattr(node, field)
                for child in part if isinstance(part, list) else [part]:
                    self.expr(child, ctx)
            return _VALUE
        if isinstance(node, ast.Slice):
            for part in (node.lower, node.upper, node.step):
                if part is not None:
                    self.expr(part, ctx)
            return _VALUE
        if isinstance(node, (ast.Tuple, ast.List)) or (not jit and isinstance(node, ast.Set)):
            for elt in node.elts:
                if isinstance(elt, ast.Starred) and not jit:
                    self.expr(elt.value, ctx)
                else:
                    self.expr(elt, ctx)
            return _VALUE
        if isinstance(node, ast.Dict) and not jit:
            for key, value in zip(node.keys, node.values, strict=True):
                if key is not None:
                    self.expr(key, ctx)
                self.expr(value, ctx)
            return _VALUE
        if isinstance(node, ast.JoinedStr) and not jit:
            for part in node.values:
                if isinstance(part, ast.FormattedValue):
                    self.expr(part.value, ctx)
                    if part.format_spec is not None:
                        self.expr(part.format_spec, ctx)
            return _VALUE
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)) and not jit:
            return self.comprehension(node, ctx)
        what = {ast.Lambda: "a lambda", ast.NamedExpr: "`:=` (walrus)", ast.JoinedStr: "an f-string",
                ast.Starred: "`*` unpacking here", ast.Yield: "yield", ast.YieldFrom: "yield from",
                ast.Await: "await", ast.ListComp: "a comprehension", ast.SetComp: "a comprehension",
                ast.GeneratorExp: "a generator expression", ast.DictComp: "a comprehension",
                ast.Dict: "a dict display", ast.Set: "a set display"}.get(type(node), f"`{type(node).__name__}`")
        where = "a @triton.jit function" if jit else "an answer cell"
        self.add(node, "expression", f"{what} is not allowed in {where} (`{_short(node)}`)")
        return None

    def call_arguments(self, call, ctx):
        for arg in call.args:
            self.expr(arg.value if isinstance(arg, ast.Starred) else arg, ctx)
        for keyword in call.keywords:
            self.expr(keyword.value, ctx)

    def comprehension(self, node, ctx):
        scope = set(ctx.comp)
        for gen in node.generators:
            self.expr(gen.iter, _Ctx(ctx.defined, ctx.dead, frozenset(scope)))
            if gen.is_async:
                self.add(node, "expression", "async comprehensions are not allowed")
            for name in _bound_names(gen.target):
                if self.bind_ok(name, name.id):
                    scope.add(name.id)
            if not _bound_names(gen.target) or not isinstance(gen.target, (ast.Name, ast.Tuple, ast.List)):
                self.add(node, "store", f"`{_short(gen.target)}`: a comprehension variable must be a plain name")
            for cond in gen.ifs:
                self.expr(cond, _Ctx(ctx.defined, ctx.dead, frozenset(scope)))
        inner = _Ctx(ctx.defined, ctx.dead, frozenset(scope))
        if isinstance(node, ast.DictComp):
            self.expr(node.key, inner)
            self.expr(node.value, inner)
        else:
            self.expr(node.elt, inner)
        return _VALUE

    def allowed_globals(self) -> str:
        modules = ", ".join(f"`{m}`" for m in self.p.modules)
        consts = (", " + ", ".join(sorted(self.p.constants))) if self.p.constants else ""
        where = "a @triton.jit function" if self.p.jit else "an answer cell's function"
        return (f"{where} may use its parameters and variables, this cell's own functions and constants, "
                f"{modules}{consts} and the builtins {', '.join(sorted(self.p.builtins))}")

    def name(self, node, ctx):
        n = node.id
        if n in ctx.comp:
            return _VALUE
        if n in self.params or n in self.locals:
            if n in MODULE_NAMES or n.startswith("__"):
                return None  # its binding is the violation, reported there
            if (self.p.jit and not ctx.dead and ctx.defined is not None and n not in ctx.defined):
                self.add(node, "unassigned",
                         f"`{n}` is read where it is not assigned on every path before this line (Triton would "
                         f"then look `{n}` up among the module's globals); assign it first, before any `if` or loop "
                         f"that uses it")
                return None
            return _VALUE
        if n.startswith("__"):
            self.add(node, "dunder", f"`{n}`: names starting with `__` are never allowed in an answer cell")
            return None
        if n in self.p.modules:
            return ("module", n)
        if n in self.cell_names or n in self.p.builtins or n in self.p.constants:
            return _VALUE
        if ctx.dead and n not in MODULE_NAMES and n not in _PYTHON_BUILTINS:
            # The released stub: `raise NotImplementedError()` then `return o, lse`. Nothing after
            # a raise or return of the same block is ever evaluated.
            return _VALUE
        if n in self.p.exceptions:
            self.add(node, "name", f"`{n}` may only appear as `raise {n}(...)`")
            return None
        self.add(node, "name", f"`{n}` is not available here: {self.allowed_globals()}")
        return None

    def attribute(self, node, ctx):
        attr = node.attr
        if attr.startswith("__"):
            self.add(node, "dunder", f"`{_short(node)}`: attributes starting with `__` are never allowed")
            return None
        base = self.expr(node.value, ctx, as_base=True)
        if base is None:
            return None
        if isinstance(base, tuple):
            path = base[1]
            module = self.p.modules[path] if path in self.p.modules else \
                self.p.modules[path.split(".")[0]].submodules[path.split(".", 1)[1]]
            if attr in module.submodules:
                return ("module", f"{path}.{attr}")
            if attr in module.members:
                return _MEMBER
            self.add(node, "attribute",
                     f"`{path}.{attr}` is not part of the allowed {module.describe} API "
                     f"(allowed: {self.module_examples(path)}; the full list is "
                     f"autograder/grading/answer_policy.py)")
            return None
        if base == _MEMBER:
            root = _short(node.value)
            self.add(node, "attribute", f"`{_short(node)}`: `{root}` may be used or called, but no attribute "
                                        f"of it may be taken")
            return None
        if attr.startswith("_"):
            self.add(node, "attribute", f"`{_short(node)}`: attributes starting with `_` are never allowed")
            return None
        if attr not in self.p.value_attrs:
            examples = (".to, .dtype, .shape, .T, .trans, .reshape, .sum, .max, ..." if self.p.jit else
                        ".shape, .dtype, .device, .to, .float, .transpose, .reshape, .amax, .sum, .masked_fill, ...")
            self.add(node, "attribute",
                     f"`.{attr}` (in `{_short(node)}`) is not an allowed tensor method or attribute "
                     f"(allowed: {examples})")
            return None
        return _VALUE

    def module_examples(self, path: str) -> str:
        return {"tl": "tl.load, tl.store, tl.dot, tl.exp2, tl.maximum, tl.where, tl.sum, tl.float32, ...",
                "tl.math": "tl.math.exp2, tl.math.log2, tl.math.exp, tl.math.log, tl.math.sqrt, ...",
                "torch": "torch.zeros, torch.full, torch.exp, torch.maximum, torch.where, torch.float32, ...",
                "math": "math.sqrt, math.inf, math.log, math.exp, math.pi, ..."}.get(path, "...")


def violations(source: str, policy: str) -> list[Violation]:
    """Why the answer cell `source` cannot be graded under `policy` ("triton" or "torch"); [] if it can."""
    if policy not in _POLICY:
        raise ValueError(f"unknown answer policy {policy!r}; known: {', '.join(POLICIES)}")
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [Violation(int(exc.lineno or 1), "syntax", f"the answer cell is not valid Python: {exc.msg}")]
    except (ValueError, RecursionError, MemoryError) as exc:
        return [Violation(1, "syntax", f"the answer cell cannot be read as Python: {type(exc).__name__}")]
    checker = _Checker(_POLICY[policy])
    try:
        checker.check_cell(tree)
    except RecursionError:
        checker.found.append(Violation(1, "syntax", "the answer cell is nested too deeply to check"))
    return sorted(dict.fromkeys(checker.found), key=lambda v: v.line)


def describe(vs: list[Violation]) -> list[str]:
    """One line per violation: "line N: message"."""
    return [f"line {v.line}: {v.message}" for v in vs]
