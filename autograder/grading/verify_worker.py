"""Worker process for verify.py: import the kernel module, run each graded test cell, report.

    python -m autograder.grading.verify_worker SPEC.json
"""
import ast
import json
import numbers
import sys


def run_cell(code, namespace, name):
    """exec a test cell; if it ends in an expression, return its value (nbgrader's partial credit
    comes from a cell's last value, e.g. the performance points)."""
    tree = ast.parse(code)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, f"<{name}>", "exec"), namespace)
    if last is None:
        return None
    return eval(compile(ast.Expression(last.value), f"<{name}>", "eval"), namespace)


def main(spec_path):
    from autograder import device

    device.configure(verbose=False)  # before the kernel module defines any @triton.jit function
    from autograder.checks import CheckFailed
    from autograder.notebook_code import import_source

    spec = json.loads(open(spec_path).read())
    module = import_source(spec["module"], "verified_submission")
    for test, code in spec["tests"]:
        namespace = {"__name__": "__verify__"}
        namespace.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
        score = None
        try:
            value = run_cell(code, namespace, test)
            passed, message = True, ""
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                score = float(value)
        except CheckFailed as exc:
            passed, message = False, exc.message
        except Exception as exc:  # a test cell must not take the worker down
            passed, message = False, f"{type(exc).__name__}: {exc}"[:300]
        print("VERIFY " + json.dumps({"test": test, "passed": passed, "message": message, "score": score}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
