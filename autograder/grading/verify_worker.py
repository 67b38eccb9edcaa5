"""Worker process for verify.py: import the kernel module, run each graded test cell, report.

    python -m autograder.grading.verify_worker SPEC.json
"""
import json
import sys


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
        try:
            exec(compile(code, f"<{test}>", "exec"), namespace)
            passed, message = True, ""
        except CheckFailed as exc:
            passed, message = False, exc.message
        except Exception as exc:  # a test cell must not take the worker down
            passed, message = False, f"{type(exc).__name__}: {exc}"[:300]
        print("VERIFY " + json.dumps({"test": test, "passed": passed, "message": message}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
