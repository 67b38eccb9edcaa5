import os

import pytest

from autograder import device


@pytest.mark.parametrize("triton_v,numpy_v,bad", [
    ("3.6.0", "2.4.1", True), ("3.5.1", "2.5.0", True), ("3.6.0", "2.3.5", False),
    ("3.8.0", "2.4.6", False), ("3.7.1+git", "2.4.0", False),
])
def test_known_bad_interpreter_pairs(triton_v, numpy_v, bad):
    advice = device.interpreter_incompatibility(triton_v, numpy_v)
    assert bool(advice) == bad
    if bad:
        assert "triton>=3.8" in advice and triton_v in advice


def test_runtime_matches_the_environment(runtime):
    if runtime.interpreter:
        assert os.environ.get("TRITON_INTERPRET") == "1"
        assert [str(d) for d in runtime.dtypes] == ["torch.float16"]  # bf16 tl.dot is wrong there
        assert runtime.device == "cpu"
    else:
        assert runtime.device == "cuda"
    assert "dtypes checked here" in runtime.describe()


def test_configure_refuses_to_switch_mode_after_triton_was_imported(runtime, monkeypatch):
    import triton  # noqa: F401  (already imported by the kernels)

    if runtime.interpreter:
        monkeypatch.setattr(device, "_gpu_status", lambda: (True, "pretend GPU"))
        with pytest.raises(RuntimeError, match="Restart the kernel"):
            device.configure(force_interpreter=False, verbose=False)
    else:
        with pytest.raises(RuntimeError, match="Restart the kernel"):
            device.configure(force_interpreter=True, verbose=False)
