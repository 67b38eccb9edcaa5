"""Training runs that can be compared step for step, and the comparison of two of them.

Both runs start from the same seed (the same initial weights), see the same batches in the same
order (dataset.Batches), and take the same AdamW steps; they differ only in the attention function.
What one run measures: its loss at every step, and its speed in tokens per second over the steps
after the first few (which include Triton compiling the kernels).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field

import torch

from .dataset import Batches
from .model import GPT, Attention, GPTConfig

# Autocast dtypes: bfloat16 on a GPU (float32's exponent range, so no loss scaling and the same
# optimiser arithmetic in both runs); float32 on the CPU, where the Triton interpreter's bfloat16
# tl.dot is wrong and float16 would need a loss scaler.
PRECISIONS = ("float32", "bfloat16")

@dataclass(frozen=True)
class Tolerance:
    """How far apart two runs' losses may be (nats per character): at any one step, and on average
    over the run (a wrong gradient drifts the whole curve; rounding only jitters it)."""

    max: float
    mean: float


# By precision, and why (measurements: docs/capstone.md).
TOLERANCES = {
    # float32: the two attentions differ by float32 rounding of different summation orders; on the
    # CPU the tiny model's two runs stayed within 5e-7 of each other over 15 steps (mean 1.6e-7).
    "float32": Tolerance(max=1e-4, mean=2e-5),
    # bfloat16 autocast rounds every matmul's output to 8 bits of mantissa (2^-9 relative), and
    # training amplifies the difference. At full size on an H200, 23 pairs of correct runs (the
    # course against SDPA flash, and SDPA math against flash; 300-600 steps, eager and in a CUDA
    # graph) were at most 0.066 apart at one step and 0.0078 on average: 1.5 and 1.9 times below
    # these bounds (docs/capstone.md). The GPU script measures the control beside every comparison.
    "bfloat16": Tolerance(max=0.1, mean=0.015),
}
# How far apart the first step's gradients may be, each weight's largest difference relative to its
# largest gradient: float32 rounding (measured: 3e-7), and problem 7's bfloat16 gradient tolerance
# (16 units of bfloat16's roundoff).
GRADIENT_TOLERANCES = {"float32": 1e-4, "bfloat16": 6.4e-2}


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 30
    weight_decay: float = 0.1
    beta2: float = 0.99          # nanoGPT's shakespeare_char: a small model, few tokens per step
    grad_clip: float = 1.0
    seed: int = 1337
    precision: str = "bfloat16"
    device: str = "cuda"
    untimed_steps: int = 5       # the first steps compile kernels: left out of tokens/s
    # Replay the training step captured once in a CUDA graph (GPU only): every kernel of the forward,
    # backward, clipping and AdamW then runs without Python between them, so a small model's step is
    # no longer paced by the host's launches. The untimed steps run first, eagerly, as the warm-up
    # the capture needs (kernels compiled, the optimiser's state created).
    cuda_graph: bool = False

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be at least 1, got {self.steps}, {self.batch_size}")
        if not 0 <= self.untimed_steps < self.steps:
            raise ValueError(f"untimed_steps must be in [0, steps), got {self.untimed_steps} of {self.steps}")
        if self.cuda_graph and torch.device(self.device).type != "cuda":
            raise ValueError(f"cuda_graph needs a CUDA device, got device={self.device!r}")
        if self.cuda_graph and self.untimed_steps < 1:
            raise ValueError("cuda_graph needs at least one untimed step: the eager warm-up before the capture")

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to a tenth of `lr` at the last step."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class Run:
    backend: str
    losses: list[float]
    timed_seconds: float
    timed_steps: int
    tokens_per_step: int

    @property
    def tokens_per_s(self) -> float:
        return self.timed_steps * self.tokens_per_step / self.timed_seconds if self.timed_seconds else float("nan")


def build_model(model_config: GPTConfig, attention: Attention, seed: int, device: str) -> GPT:
    """The model with the initial weights that `seed` gives, whatever the attention."""
    torch.manual_seed(seed)
    return GPT(model_config, attention).to(device)


def make_optimizer(model: GPT, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, LayerNorm gains or positions' ...).
    On a GPU it is capturable, with the learning rate a tensor on the GPU, whether the step is
    replayed from a CUDA graph or not: a graph needs both (a float would be frozen into the graph at
    its capture), and an eager run then takes exactly the steps a graphed one does. AdamW rounds its
    bias correction differently when capturable, and a difference that small in a weight whose
    gradient is near zero flips the sign of its update."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    on_gpu = torch.device(config.device).type == "cuda"
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=torch.tensor(config.lr, device=config.device) if on_gpu else config.lr,
                             betas=(0.9, config.beta2), foreach=True, capturable=on_gpu)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)   # in place: the captured graph reads this tensor
        else:
            group["lr"] = lr


def _autocast(config: TrainConfig, cache: bool = True):
    # A captured graph must not use autocast's cache of cast weights: the cache lives outside the
    # graph's memory and is cleared after the capture.
    device_type = torch.device(config.device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=config.precision == "bfloat16",
                          cache_enabled=cache)


def _step(model: GPT, optimizer: torch.optim.Optimizer, config: TrainConfig, x: torch.Tensor, y: torch.Tensor,
          cache: bool = True) -> torch.Tensor:
    """One training step on the batch (x, y): forward, backward, gradient clipping, AdamW. Returns the
    loss (detached, not read back: reading it would wait for the GPU)."""
    with _autocast(config, cache):
        _, loss = model(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return loss.detach()


class GraphedStep:
    """`_step` captured once in a CUDA graph and replayed. Each call copies its batch into the graph's
    own input tensors and returns a copy of the graph's loss. The capture starts with the gradients
    set to None, so that the captured backward writes them instead of adding to them."""

    def __init__(self, model: GPT, optimizer: torch.optim.Optimizer, config: TrainConfig, x: torch.Tensor,
                 y: torch.Tensor):
        self.x, self.y = x.clone(), y.clone()
        optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = _step(model, optimizer, config, self.x, self.y, cache=False)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        self.graph.replay()
        return self.loss.clone()


def _batch(batches: Batches, step: int, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = batches[step]
    return x.to(config.device, non_blocking=True), y.to(config.device, non_blocking=True)


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def train(name: str, attention: Attention, model_config: GPTConfig, config: TrainConfig, batches: Batches,
          progress=None, progress_every: int = 100, keep_model: dict | None = None) -> Run:
    """Train a fresh model (seeded by config.seed) for config.steps steps; `progress(step, loss)` is
    called every `progress_every` steps and after the last one, when given (reading the loss waits
    for the GPU, so not at every step); the trained model goes into `keep_model[name]` when a dict
    is given."""
    if len(batches) < config.steps:
        raise ValueError(f"{config.steps} steps need as many batches, got {len(batches)}")
    model = build_model(model_config, attention, config.seed, config.device)
    optimizer = make_optimizer(model, config)
    losses = []
    start = 0.0
    graphed = None
    # A graph's warm-up steps run on a side stream (CUDA's rule for work captured later), their batch
    # copies and learning rates too, so that nothing they read is written on another stream.
    warm_up_stream = torch.cuda.Stream() if config.cuda_graph else None
    if warm_up_stream is not None:
        warm_up_stream.wait_stream(torch.cuda.current_stream())
    for step in range(config.steps):
        if step == config.untimed_steps:
            if warm_up_stream is not None:
                torch.cuda.current_stream().wait_stream(warm_up_stream)
                warm_up_stream = None
                graphed = GraphedStep(model, optimizer, config, *_batch(batches, step, config))
            _synchronize(config.device)
            start = time.perf_counter()
        with torch.cuda.stream(warm_up_stream) if warm_up_stream is not None else contextlib.nullcontext():
            x, y = _batch(batches, step, config)
            _set_lr(optimizer, config.lr_at(step))
            loss = graphed(x, y) if graphed is not None else _step(model, optimizer, config, x, y)
            losses.append(loss)
            if progress is not None and (step % progress_every == 0 or step == config.steps - 1):
                progress(step, loss.item())   # on the stream that computed it
    _synchronize(config.device)
    seconds = time.perf_counter() - start
    if keep_model is not None:
        keep_model[name] = model
    values = torch.stack(losses).float().cpu().tolist()
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"{name}: the loss is not finite from step {bad[0]} on")
    return Run(name, values, seconds, config.steps - config.untimed_steps, batches.tokens_per_batch)


def first_step_gradients(model_config: GPTConfig, attention: Attention, config: TrainConfig,
                         batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{parameter name: gradient} of the seeded initial model's loss on `batch`: the first step's
    gradients, where the two runs still hold the same weights."""
    model = build_model(model_config, attention, config.seed, config.device)
    x, y = (t.to(config.device) for t in batch)
    with _autocast(config):
        _, loss = model(x, y)
    loss.backward()
    return {name: p.grad.detach().float().cpu() for name, p in model.named_parameters() if p.grad is not None}


def gradient_differences(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> dict[str, float]:
    """{weight: max |ours - theirs| / max |theirs|} over the weights of two first_step_gradients."""
    if ours.keys() != theirs.keys():
        raise ValueError(f"the two models' weights differ: {sorted(ours.keys() ^ theirs.keys())}")
    return {name: ((ours[name] - theirs[name]).abs().max() / theirs[name].abs().max().clamp_min(1e-30)).item()
            for name in ours}


@dataclass
class Comparison:
    """Two runs from the same seed on the same batches, and how far apart their losses are."""

    runs: dict[str, Run]
    tolerance: Tolerance
    model: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)

    @property
    def differences(self) -> list[float]:
        """Per step, the first run's loss minus the second's."""
        first, second = self.runs.values()
        return [a - b for a, b in zip(first.losses, second.losses, strict=True)]

    @property
    def max_divergence(self) -> float:
        return max(abs(d) for d in self.differences)

    @property
    def mean_divergence(self) -> float:
        return sum(abs(d) for d in self.differences) / len(self.differences)

    @property
    def agree(self) -> bool:
        return self.max_divergence <= self.tolerance.max and self.mean_divergence <= self.tolerance.mean

    def summary(self) -> str:
        first, second = self.runs
        speeds = ", ".join(f"{r.backend} {r.tokens_per_s:,.0f} tokens/s" for r in self.runs.values())
        verdict = "within" if self.agree else "OUTSIDE"
        return (f"{first} vs {second}: final loss {self.runs[first].losses[-1]:.4f} vs "
                f"{self.runs[second].losses[-1]:.4f}; |difference| max {self.max_divergence:.2e}, mean "
                f"{self.mean_divergence:.2e}, {verdict} the tolerance (max {self.tolerance.max:g}, mean "
                f"{self.tolerance.mean:g}); {speeds}")

    def to_dict(self) -> dict:
        return {"model": self.model, "training": self.training, "tolerance": asdict(self.tolerance),
                "agree": self.agree, "max_divergence": self.max_divergence,
                "mean_divergence": self.mean_divergence,
                "runs": {name: {**asdict(run), "tokens_per_s": run.tokens_per_s} for name, run in self.runs.items()}}


def compare(attentions: dict[str, Attention], model_config: GPTConfig, config: TrainConfig, batches: Batches,
            tolerance: Tolerance | None = None, progress=None, keep_models: dict | None = None) -> Comparison:
    """Train once with each of the two attention functions in `attentions` ({name: function}), from the
    same seed on the same batches; the tolerance defaults to TOLERANCES[config.precision]. The trained
    models go into `keep_models` ({name: model}) when a dict is given."""
    if len(attentions) != 2:
        raise ValueError(f"compare needs exactly two attention functions, got {list(attentions)}")
    runs = {name: train(name, fn, model_config, config, batches,
                        progress=(lambda step, loss, name=name: progress(name, step, loss)) if progress else None,
                        keep_model=keep_models)
            for name, fn in attentions.items()}
    return Comparison(runs, TOLERANCES[config.precision] if tolerance is None else tolerance,
                      model=asdict(model_config), training=asdict(config))


def plot(comparison: Comparison, path=None, control: Comparison | None = None):
    """Both loss curves, and their difference with the tolerance band (and a `control` comparison's
    difference beside it, when given); saved to `path` when given."""
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True, height_ratios=(2, 1))
    for (name, run), style in zip(comparison.runs.items(), ("-", "--"), strict=True):
        top.plot(run.losses, style, lw=1.2, label=f"{name} ({run.tokens_per_s:,.0f} tokens/s)")
    top.set_ylabel("training loss (nats / character)")
    top.legend()
    top.set_title("Same seed, same batches, two attentions")
    first, second = comparison.runs
    bottom.plot(comparison.differences, lw=1.0, color="black", label=f"{first} − {second}")
    if control is not None:
        a, b = control.runs
        bottom.plot(control.differences, lw=1.0, color="tab:orange", alpha=0.8, label=f"{a} − {b} (control)")
    bottom.axhspan(-comparison.tolerance.max, comparison.tolerance.max, color="tab:green", alpha=0.15,
                   label=f"tolerance ±{comparison.tolerance.max:g} (mean {comparison.tolerance.mean:g})")
    bottom.axhline(0, color="grey", lw=0.5)
    bottom.set_ylabel("loss difference")
    bottom.set_xlabel("step")
    bottom.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
