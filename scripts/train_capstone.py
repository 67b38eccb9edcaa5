"""The capstone on a GPU: train the small GPT from the same seed with the course's attention kernels
(problem 7's forward and backward) and with PyTorch's SDPA, and compare the loss curves and speed.

    python scripts/train_capstone.py OUTDIR [--steps 600] [--batch-size 64] [--no-control] [--cuda-graph]

The model is nanoGPT's shakespeare_char size: 6 layers, 6 heads of D = 64, context 256, on tiny
Shakespeare (shipped in autograder/capstone/texts/), with bfloat16 autocast. Three runs, the same
seed and batches: "course", "sdpa" (FlashAttention-2 backend pinned) and, unless --no-control,
"sdpa-math" (PyTorch's math backend): the control, how far two correct attentions drift apart.
The course run's losses must stay within the tolerance (autograder/capstone/train.py, TOLERANCES:
at every step, and on average) of the SDPA run's, and its first step's gradients within
GRADIENT_TOLERANCES of SDPA's.

Writes OUTDIR/capstone.json (every loss of every run, tokens/s, the tolerance and whether it held,
the control's divergence, GPU, versions, the command, a text sample from the course-trained model)
and OUTDIR/capstone.png (the curves and their differences). Exits 1 when the runs or the first
step's gradients disagree.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--precision", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu (the interpreter: tiny sizes only)")
    parser.add_argument("--no-control", action="store_true", help="skip the sdpa-math run")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="replay each run's training step captured once in a CUDA graph (GPU only): the "
                             "speed of the kernels rather than of the host's launches")
    args = parser.parse_args(argv)

    from autograder import device

    runtime = device.configure(force_interpreter=args.device == "cpu")
    if args.device == "cuda" and runtime.interpreter:
        sys.exit(f"no GPU that Triton supports here ({runtime.reason}); pass --device cpu for a tiny run")
    import matplotlib

    matplotlib.use("Agg")
    from autograder.benchmark import environment
    from autograder.capstone import (
        GRADIENT_TOLERANCES,
        TOLERANCES,
        Batches,
        CharText,
        Comparison,
        GPTConfig,
        TrainConfig,
        first_step_gradients,
        gradient_differences,
        plot,
        train,
    )
    from autograder.capstone.attention import attention_backend, course_kernels

    text = CharText.load()
    train_tokens, _ = text.split()
    model_config = GPTConfig(text.vocab_size, context=args.context, n_layer=args.layers, n_head=args.heads,
                             head_dim=args.head_dim)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         warmup_steps=max(1, args.steps // 20), precision=args.precision, device=args.device,
                         untimed_steps=min(10, args.steps // 2), cuda_graph=args.cuda_graph)
    batches = Batches(train_tokens, args.batch_size, args.context, args.steps, seed=args.seed)
    kernels, where = course_kernels()
    print(f"course kernels: {where}; {runtime.describe()}")
    names = ["course", "sdpa"] + ([] if args.no_control else ["sdpa-math"])
    runs, models = {}, {}
    started = time.perf_counter()
    # Step 0: the same weights and batch, so the gradients must agree to rounding (a scale error in
    # dQ or dK hides from AdamW's loss curve, not from this).
    grads = {name: first_step_gradients(model_config, attention_backend(name, kernels), config, batches[0])
             for name in names}
    gradient_check = {f"{name} vs sdpa": max(gradient_differences(grads[name], grads["sdpa"]).values())
                      for name in names if name != "sdpa"}
    gradient_tolerance = GRADIENT_TOLERANCES[config.precision]
    print("first step, max |g - g_sdpa| / max |g_sdpa| over the weights: "
          + ", ".join(f"{k} {v:.1e}" for k, v in gradient_check.items()) + f" (tolerance {gradient_tolerance:g})")
    for name in names:
        t0 = time.perf_counter()

        def progress(step, loss, name=name):
            print(f"  {name:>9} step {step:5d}  loss {loss:.4f}", flush=True)

        runs[name] = train(name, attention_backend(name, kernels), model_config, config, batches,
                           progress=progress, keep_model=models)
        print(f"{name}: {time.perf_counter() - t0:.1f} s, {runs[name].tokens_per_s:,.0f} tokens/s", flush=True)
    comparison = Comparison({n: runs[n] for n in ("course", "sdpa")}, TOLERANCES[config.precision],
                            model=vars(model_config) | {"width": model_config.width},
                            training=vars(config))
    control = None if args.no_control else Comparison({n: runs[n] for n in ("sdpa-math", "sdpa")},
                                                      comparison.tolerance)
    sample = _sample(models["course"], text, args.device)
    args.outdir.mkdir(parents=True, exist_ok=True)
    result = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "environment": environment(),
        "runtime": runtime.describe(),
        "course_kernels": where,
        "text": "tiny Shakespeare (autograder/capstone/texts/README.md)",
        "tokens_per_step": batches.tokens_per_batch,
        "seconds": time.perf_counter() - started,
        **comparison.to_dict(),
        "control": None if control is None else {"runs": list(control.runs), "agree": control.agree,
                                                 "max_divergence": control.max_divergence,
                                                 "mean_divergence": control.mean_divergence},
        "first_step_gradients": {"max_relative_difference": gradient_check, "tolerance": gradient_tolerance,
                                 "agree": gradient_check["course vs sdpa"] <= gradient_tolerance},
        "sample_from_course_model": sample,
    }
    if control is not None:
        result["runs"]["sdpa-math"] = control.to_dict()["runs"]["sdpa-math"]
    (args.outdir / "capstone.json").write_text(json.dumps(result, indent=1))
    plot(comparison, args.outdir / "capstone.png", control=control)
    print(comparison.summary())
    if control is not None:
        print(f"control: {control.summary()}")
    print(f"wrote {args.outdir / 'capstone.json'} and capstone.png in {result['seconds']:.0f} s")
    return 0 if comparison.agree and result["first_step_gradients"]["agree"] else 1


def _sample(model, text, device: str, length: int = 300) -> str:
    """`length` characters from the course-trained model, after a newline, from a fixed seed."""
    import torch

    generator = torch.Generator().manual_seed(0)
    start = text.encode("\n")[None].to(device)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=device != "cpu"):
        return text.decode(model.generate(start, length, generator=generator)[0, 1:])


if __name__ == "__main__":
    sys.exit(main())
