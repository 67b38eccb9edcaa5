"""The capstone on the CPU interpreter: a tiny GPT (2 layers, 2 heads of D = 16, context 32) trained
for a few steps with the course's kernels (problem 7's reference, forward and backward) and with
SDPA, from the same seed on the same batches; the text and its vocabulary; where the kernels come
from (a learner's problem 7 notebook, or the reference); and that a wrong backward is caught."""
from __future__ import annotations

import hashlib
import sys

import nbformat
import pytest
import torch

from autograder import notebook_template, problems
from autograder.capstone import (
    GRADIENT_TOLERANCES,
    TOLERANCES,
    Batches,
    CharText,
    GPTConfig,
    KernelsNotReady,
    TrainConfig,
    attention_backend,
    compare,
    first_step_gradients,
    gradient_differences,
    train,
)
from autograder.capstone.attention import course_attention, course_kernels, learner_kernels
from autograder.capstone.dataset import TEXT
from autograder.grading.samples import SAMPLES, build_submission, sample_kernel_function
from autograder.notebook_code import read
from tests.conftest import RUNTIME

TINY = dict(context=32, n_layer=2, n_head=2, head_dim=16)
STEPS = 5


@pytest.fixture(scope="module")
def text():
    return CharText.load()


# The tiny model trains on the CPU, in the interpreter; where the kernels run on a GPU instead, the
# gpu tests below and scripts/train_capstone.py train at the GPU's sizes.
interpreter_only = pytest.mark.skipif(not RUNTIME.interpreter,
                                      reason="trains the tiny model on the CPU, in the Triton interpreter")


@pytest.fixture(scope="module")
def setup(text):
    model_config = GPTConfig(text.vocab_size, **TINY)
    config = TrainConfig(steps=STEPS, batch_size=4, lr=3e-3, warmup_steps=2, precision="float32", device="cpu",
                         untimed_steps=1)
    batches = Batches(text.split()[0], config.batch_size, model_config.context, config.steps, seed=config.seed)
    return model_config, config, batches


@pytest.fixture(scope="module")
def kernels():
    return problems.reference_module("problem7")


def _wrong_kernels(name):
    sample = next(s for s in SAMPLES["problem7"] if s.name == name)
    return sys.modules[sample_kernel_function("problem7", sample).__module__]


# --- the text ----------------------------------------------------------------------------------


def test_the_shipped_text_is_the_one_its_readme_names(text):
    readme = (TEXT.parent / "README.md").read_text()
    assert hashlib.sha256(TEXT.read_bytes()).hexdigest() in readme
    assert "public domain" in readme and "github.com/karpathy/char-rnn" in readme
    assert len(text.text) == 1_115_394 and text.vocab_size == 65
    assert text.chars == "".join(sorted(set(text.text)))


def test_characters_round_trip_through_tokens(text):
    passage = text.text[1000:1400]
    tokens = text.encode(passage)
    assert tokens.dtype == torch.int64 and tokens.shape == (400,)
    assert int(tokens.max()) < text.vocab_size
    assert text.decode(tokens) == passage
    assert text.decode(tokens.tolist()) == passage
    train, held_out = text.split()
    assert len(train) == int(0.9 * len(text.text)) and len(train) + len(held_out) == len(text.text)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        text.encode("naïve")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        text.decode([0, 65])
    with pytest.raises(FileNotFoundError, match="no text at"):
        CharText.load("no/such/text.txt")


def test_batches_are_the_same_for_the_same_seed_and_targets_are_the_next_characters(text):
    tokens = text.split()[0]
    a, b, c = (Batches(tokens, 3, 16, 4, seed=s) for s in (7, 7, 8))
    assert torch.equal(a.offsets, b.offsets) and not torch.equal(a.offsets, c.offsets)
    x, y = a[2]
    assert x.shape == y.shape == (3, 16) and a.tokens_per_batch == 48
    assert torch.equal(x[:, 1:], y[:, :-1])
    start = int(a.offsets[2, 0])
    assert text.decode(x[0]) == text.text[start:start + 16] and text.decode(y[0]) == text.text[start + 1:start + 17]
    with pytest.raises(IndexError):
        a[4]
    with pytest.raises(ValueError, match="context of 16 needs at least 17"):
        Batches(tokens[:10], 3, 16, 4, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        Batches(tokens, 0, 16, 4, seed=0)


def test_bad_settings_are_refused_with_what_is_wrong(text, kernels):
    with pytest.raises(ValueError, match="head_dim"):
        GPTConfig(text.vocab_size, head_dim=0)
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="float16")
    with pytest.raises(ValueError, match="cuda_graph needs a CUDA device, got device='cpu'"):
        TrainConfig(device="cpu", cuda_graph=True)
    with pytest.raises(ValueError, match="cuda_graph needs at least one untimed step"):
        TrainConfig(untimed_steps=0, cuda_graph=True)
    with pytest.raises(ValueError, match="unknown attention backend 'flash'"):
        attention_backend("flash", kernels)
    with pytest.raises(ValueError, match="needs problem 7's kernels"):
        attention_backend("course")
    with pytest.raises(KernelsNotReady, match="no flash_attention"):
        course_attention(problems.reference_module("problem3"))


# --- training with the course's kernels ---------------------------------------------------------


@pytest.fixture(scope="module")
def comparison(setup, kernels):
    model_config, config, batches = setup
    return compare({"course": attention_backend("course", kernels), "sdpa": attention_backend("sdpa")},
                   model_config, config, batches)


@interpreter_only
def test_both_backends_train_to_the_same_losses(comparison):
    course, sdpa = comparison.runs.values()
    assert len(course.losses) == len(sdpa.losses) == STEPS
    assert course.losses[-1] < course.losses[0] - 0.1  # it trains
    assert comparison.tolerance == TOLERANCES["float32"]
    assert comparison.agree and comparison.max_divergence <= TOLERANCES["float32"].max
    assert 0 <= comparison.mean_divergence <= comparison.max_divergence
    assert course.tokens_per_s > 0 and sdpa.tokens_per_s > 0
    summary = comparison.summary()
    assert "within the tolerance" in summary and "tokens/s" in summary
    assert set(comparison.to_dict()["runs"]) == {"course", "sdpa"}


@interpreter_only
def test_gradients_flow_through_the_course_kernels(setup, kernels, monkeypatch):
    """The first step's gradients equal SDPA's, and they came from problem 7's backward kernels."""
    model_config, config, batches = setup
    calls = []
    backward = kernels._launch_backward   # what the autograd function's backward calls
    monkeypatch.setattr(kernels, "_launch_backward", lambda *a, **k: calls.append(a[0].shape) or backward(*a, **k))
    course = first_step_gradients(model_config, attention_backend("course", kernels), config, batches[0])
    sdpa = first_step_gradients(model_config, attention_backend("sdpa"), config, batches[0])
    assert calls == [(4, 2, 32, 16)] * model_config.n_layer  # one backward per layer, on (B, H, L, D)
    differences = gradient_differences(course, sdpa)
    assert len(differences) == len(list(course)) > 10
    assert max(differences.values()) <= GRADIENT_TOLERANCES["float32"], differences
    assert all(course[f"blocks.0.attn.{w}.weight"].abs().max() > 0 for w in "qkv")


@interpreter_only
def test_a_wrong_backward_is_caught(setup, comparison):
    """A dK without its softmax scale hides from AdamW's loss curve but not from the first step's
    gradients; a backward that forgets the causal mask leaves the loss curve within steps."""
    model_config, config, batches = setup
    sdpa = first_step_gradients(model_config, attention_backend("sdpa"), config, batches[0])
    no_scale = first_step_gradients(model_config, course_attention(_wrong_kernels("dk_no_scale")), config,
                                    batches[0])
    differences = gradient_differences(no_scale, sdpa)
    # In the last block, dK is four times the right one (off by three times its size) and dV is right.
    last = f"blocks.{model_config.n_layer - 1}.attn"
    assert 2.9 < differences[f"{last}.k.weight"] < 3.1
    assert differences[f"{last}.v.weight"] <= GRADIENT_TOLERANCES["float32"]
    short = TrainConfig(**{**vars(config), "steps": 3})
    wrong = compare({"course": course_attention(_wrong_kernels("no_recompute_mask")),
                     "sdpa": attention_backend("sdpa")}, model_config, short, batches)
    assert not wrong.agree and wrong.max_divergence > 10 * TOLERANCES["float32"].max
    assert "OUTSIDE" in wrong.summary()


class _RateFrozenAtStep3(TrainConfig):
    def lr_at(self, step: int) -> float:
        return super().lr_at(min(step, 3))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["course", "sdpa-math"])
def test_a_step_replayed_from_a_cuda_graph_trains_as_the_eager_step_does(text, kernels, backend):
    """The captured step (forward, backward, clipping, and AdamW with the learning rate a tensor that
    the schedule changes in place at every replay) gives the eager steps' losses. Float32, so that a
    learning rate frozen at the capture would show: the schedule falls tenfold over these steps (SDPA's
    flash backend has no float32 kernel, so its math backend stands for SDPA here)."""
    model_config = GPTConfig(text.vocab_size, context=128, n_layer=2, n_head=4, head_dim=64)
    eager = TrainConfig(steps=16, batch_size=8, lr=3e-3, warmup_steps=3, precision="float32", device="cuda",
                        untimed_steps=3)
    batches = Batches(text.split()[0], eager.batch_size, model_config.context, eager.steps, seed=eager.seed)
    attention = attention_backend(backend, kernels)
    runs = {mode: train(mode, attention, model_config, config, batches)
            for mode, config in (("eager", eager), ("graph", TrainConfig(**{**vars(eager), "cuda_graph": True})))}
    eager_losses, graph_losses = runs["eager"].losses, runs["graph"].losses
    assert max(abs(a - b) for a, b in zip(eager_losses, graph_losses, strict=True)) <= TOLERANCES["float32"].max
    assert graph_losses[-1] < graph_losses[0] - 0.5   # it trains
    # What a learning rate frozen at the capture would have given: far outside the tolerance.
    frozen_losses = train("frozen", attention, model_config, _RateFrozenAtStep3(**vars(eager)), batches).losses
    assert max(abs(a - b) for a, b in zip(frozen_losses, eager_losses, strict=True)) > 10 * TOLERANCES["float32"].max


# --- where the kernels come from ----------------------------------------------------------------


def test_a_learners_notebook_is_used_when_solved_and_refused_with_the_reason_otherwise(repo_root, tmp_path):
    release = repo_root / "notebooks" / "problem7" / "problem7.ipynb"
    with pytest.raises(KernelsNotReady, match="still raises NotImplementedError"):
        learner_kernels(release)
    with pytest.raises(KernelsNotReady, match="no notebook at"):
        learner_kernels(tmp_path / "problem7.ipynb")
    with pytest.raises(KernelsNotReady, match="is not problem 7's notebook"):
        learner_kernels(repo_root / "notebooks" / "problem3" / "problem3.ipynb")
    # In the course repository an unsolved notebook falls back to the reference, and says so.
    kernels, where = course_kernels(release)
    assert "reference solution, because" in where and hasattr(kernels, "flash_attention")

    spec = problems.get_spec("problem7")
    source = read(repo_root / "solutions" / "problem7" / spec.notebook)
    for name, must_fail in (("correct", False), ("no_delta", True)):
        sample = next(s for s in SAMPLES["problem7"] if s.name == name)
        notebook = tmp_path / f"{name}.ipynb"
        nbformat.write(build_submission(sample, source, read(release), spec.student_cell, spec.kernel_cells[-1]),
                       str(notebook))
        if must_fail:
            with pytest.raises(KernelsNotReady, match="fail its self-check"):
                learner_kernels(notebook)
        else:
            assert learner_kernels(notebook, self_check=False).flash_attention is not None


# --- the chapter --------------------------------------------------------------------------------


def test_the_chapter_follows_the_template_and_has_no_outputs(repo_root):
    path = repo_root / "notebooks" / "capstone" / "capstone.ipynb"
    nb = read(path)
    nbformat.validate(nb)
    assert notebook_template.differences(nb, "capstone", path.name) == []
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert not any(c.metadata.get("nbgrader", {}).get("grade") for c in nb.cells)  # nothing to grade
    assert "capstone" in notebook_template.CHAPTERS
