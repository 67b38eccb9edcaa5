"""grading/reference_cache.py: the judge asks the reference kernel each question once per cache;
different inputs, a different reference or damaged files are asked again, and a GPU keeps nothing."""
import torch

from autograder.counted_cost import Counts
from autograder.grading.reference_cache import FOLDER, CachedReference, cached_reference
from autograder.integrity import watch_call

WATCH = {"ops": ["aten::mm"], "functions": [], "triton_launches": 1, "largest_numel": 8, "enlarged_copies": []}


class FakeHost:
    """What RemoteFunction's host answers: counts every call sent to the candidate."""

    def __init__(self):
        self.calls = 0

    def call(self, target, args, kwargs, count=False):
        self.calls += 1
        result = (args[0] * 2, args[0].sum())
        return (result, dict(WATCH), Counts(programs=3, exp=7)) if count else (result, dict(WATCH))


class FakeRemote:
    def __init__(self, target="flash_attention_forward"):
        self._host, self._target = FakeHost(), target


def _cached(tmp_path, remote, source="reference source"):
    return CachedReference(remote, source, tmp_path / FOLDER, "versions")


def test_a_question_is_sent_once_and_answered_the_same_after(tmp_path):
    x = torch.arange(6, dtype=torch.float16).reshape(2, 3)
    remote = FakeRemote()
    first = _cached(tmp_path, remote)(x, causal=True)
    again = _cached(tmp_path, remote)(x.clone(), causal=True)   # a new judge, the same inputs
    assert remote._host.calls == 1
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    counted, counts = _cached(tmp_path, remote).remote_count(x, causal=True)
    counted_again, counts_again = _cached(tmp_path, remote).remote_count(x, causal=True)
    assert remote._host.calls == 2 and counts == counts_again and counts.programs == 3 and counts.exp == 7
    assert torch.equal(counted[0], counted_again[0])


def test_the_watch_record_is_replayed_from_the_cache(tmp_path):
    x = torch.ones(4)
    remote = FakeRemote()
    _cached(tmp_path, remote)(x)
    with watch_call() as record:
        _cached(tmp_path, remote)(x)
    assert remote._host.calls == 1 and record.triton_launches == 1 and "aten::mm" in record.remote_ops


def test_other_inputs_layouts_references_or_targets_are_asked_again(tmp_path):
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    remote = FakeRemote()
    _cached(tmp_path, remote)(x)
    _cached(tmp_path, remote)(x + 1)                       # other values
    _cached(tmp_path, remote)(x.t().contiguous().t())      # same values, other strides
    _cached(tmp_path, remote)(x, causal=True)              # another keyword
    _cached(tmp_path, remote, source="another reference")(x)
    _cached(tmp_path, FakeRemote("other_function"))(x)
    assert remote._host.calls == 5


def test_a_damaged_file_is_asked_again_and_an_unkeyable_argument_is_never_kept(tmp_path):
    x = torch.ones(3)
    remote = FakeRemote()
    _cached(tmp_path, remote)(x)
    for path in (tmp_path / FOLDER).iterdir():
        path.write_bytes(b"not a torch file")
    _cached(tmp_path, remote)(x)
    _cached(tmp_path, remote)(x, hook=object())
    _cached(tmp_path, remote)(x, hook=object())
    assert remote._host.calls == 4


def test_nothing_is_kept_on_a_gpu_or_without_a_cache(tmp_path, monkeypatch):
    remote = FakeRemote()
    monkeypatch.setenv("COURSE_JUDGE_CACHE", str(tmp_path))
    assert cached_reference(remote, "src", interpreter=False) is remote
    assert isinstance(cached_reference(remote, "src", interpreter=True), CachedReference)
    monkeypatch.delenv("COURSE_JUDGE_CACHE")
    assert cached_reference(remote, "src", interpreter=True) is remote
