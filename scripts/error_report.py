"""Measure how far the reference kernel is from float64, in units of the dtype's roundoff.

This is the evidence behind the tolerances in autograder/checks.py:
    python scripts/error_report.py [--out results.json]
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autograder import device  # noqa: E402

runtime = device.configure()

import torch  # noqa: E402

from autograder import problems  # noqa: E402
from autograder.checks import LSE_TOLERANCE, TOLERANCES  # noqa: E402
from autograder.inputs import Case, make_qkv  # noqa: E402
from autograder.references import attention_reference  # noqa: E402

UNIT_ROUNDOFF = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    args = parser.parse_args()
    kernel = problems.reference_module("problem3", Path(__file__).resolve().parent.parent)
    big = not runtime.interpreter
    lengths = (1, 17, 200, 1000, 4096) if big else (1, 17, 200, 1000)
    rows = []
    for dtype in runtime.dtypes:
        name = str(dtype).replace("torch.", "")
        for length in lengths:
            for d in (16, 64, 128):
                for seed in range(3):
                    case = Case(2, 4, length, d, name, seed=seed)
                    q, k, v = make_qkv(case, runtime.device)
                    o, lse = kernel.flash_attention_forward(q, k, v)
                    ref, ref_lse = attention_reference(q, k, v)
                    err = (o.double() - ref).abs()
                    tol = TOLERANCES[dtype]
                    rows.append({
                        "dtype": name, "L": length, "D": d, "seed": seed,
                        "max_abs_err": err.max().item(),
                        "max_err_in_u": err.max().item() / UNIT_ROUNDOFF[dtype],
                        "rel_fro": (err.norm() / ref.norm()).item(),
                        "worst_fraction_of_tol": (err / (tol.atol + tol.rtol * ref.abs())).max().item(),
                        "lse_max_abs_err": (lse.double() - ref_lse).abs().max().item(),
                    })
    print(f"{'dtype':<9} {'max|err|':>9} {'in u':>6} {'rel fro':>9} {'of tol':>7} {'lse err':>9}  (worst over shapes)")
    for name in dict.fromkeys(r["dtype"] for r in rows):
        sel = [r for r in rows if r["dtype"] == name]
        print(f"{name:<9} {max(r['max_abs_err'] for r in sel):>9.2e} {max(r['max_err_in_u'] for r in sel):>6.2f} "
              f"{max(r['rel_fro'] for r in sel):>9.2e} {max(r['worst_fraction_of_tol'] for r in sel):>7.2f} "
              f"{max(r['lse_max_abs_err'] for r in sel):>9.2e}")
    print(f"lse tolerance: atol {LSE_TOLERANCE.atol}")
    if args.out:
        Path(args.out).write_text(json.dumps({"runtime": runtime.describe(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
