"""scripts/compile_sm90.py: every kernel the course's wrappers launch on a Hopper GPU compiles for
sm_90 on a machine without a GPU (the CPU interpreter accepts kernels that the compiler rejects)."""
import os
import subprocess
import sys

_BROKEN_KERNEL = '''
import sys
sys.path.insert(0, sys.argv[1])
import triton, triton.language as tl
from compile_sm90 import compile_variant
SCALE = 0.5   # a plain float: the interpreter reads it inside a kernel, the compiler refuses it
@triton.jit
def scaled(X, n, HEAD_DIM: tl.constexpr):
    offs = tl.arange(0, HEAD_DIM)
    tl.store(X + offs, tl.load(X + offs, mask=offs < n) * SCALE, mask=offs < n)
try:
    compile_variant(scaled, dict(HEAD_DIM=16), 4, 1)
except Exception as exc:
    print("refused:", type(exc).__name__)
'''


def _without_interpreter():
    return {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


def test_a_kernel_the_compiler_refuses_fails_the_check(repo_root, tmp_path):
    (tmp_path / "broken.py").write_text(_BROKEN_KERNEL)  # Triton reads a kernel's source from its file
    run = subprocess.run([sys.executable, str(tmp_path / "broken.py"), str(repo_root / "scripts")],
                         env=_without_interpreter(), capture_output=True, text=True, timeout=300)
    assert "refused: CompilationError" in run.stdout, run.stdout + run.stderr


def test_every_kernel_variant_compiles_for_hopper(repo_root):
    """Problems 3-8 at D=64 (the script takes --dims): pointer and descriptor kernels, causal and not,
    counting visits and not, and each with its sequence lengths equal to 1."""
    run = subprocess.run([sys.executable, "scripts/compile_sm90.py", "--dims", "64"], cwd=repo_root,
                         env=_without_interpreter(), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "56 kernel variants compiled for sm_90" in run.stdout, run.stdout
    for problem in ("problem3", "problem4", "problem5", "problem6", "problem7", "problem8"):
        assert f"compiled {problem} D=64" in run.stdout, problem
