import math

import pytest
import torch

from autograder.references import attention_reference, create_mask_bool, naive_attention, repeat_kv


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("n,window,sink", [(9, 1, 0), (9, 3, 0), (9, 3, 2), (9, 20, 1), (9, 4, 9)])
def test_mask_follows_the_seed_rules_elementwise(n, window, sink):
    mask = create_mask_bool(n, window, sink)
    for i in range(n):
        for j in range(n):
            want = (i - (window - 1) <= j <= i) or (j < sink and j <= i)
            assert bool(mask[i, j]) == want, (i, j)


def test_full_attention_matches_a_direct_formula_including_natural_log_lse():
    q, k, v = rand(1, 1, 5, 4, seed=1), rand(1, 1, 7, 4, seed=2), rand(1, 1, 7, 4, seed=3)
    out, lse = attention_reference(q, k, v)
    for i in range(5):
        s = [float(q[0, 0, i] @ k[0, 0, j]) / 2.0 for j in range(7)]  # 1/sqrt(4)
        z = sum(math.exp(x) for x in s)
        assert lse[0, 0, i].item() == pytest.approx(math.log(z), abs=1e-12)
        want = sum(math.exp(x) / z * v[0, 0, j] for j, x in enumerate(s))
        torch.testing.assert_close(out[0, 0, i], want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("causal,window,sink", [(False, None, None), (True, None, None), (True, 4, None), (True, 4, 2)])
def test_reference_agrees_with_the_seeds_naive_attention(causal, window, sink):
    q, k, v = rand(2, 4, 33, 16, seed=4), rand(2, 2, 33, 16, seed=5), rand(2, 2, 33, 16, seed=6)
    out, lse = attention_reference(q, k, v, causal, window, sink)
    n_out, n_lse = naive_attention(q, k, v, causal, window, sink)
    torch.testing.assert_close(out, n_out, atol=1e-6, rtol=0)  # naive takes softmax in float32
    torch.testing.assert_close(lse, n_lse.double(), atol=1e-5, rtol=0)  # naive takes lse in float32


def test_gqa_maps_query_head_to_kv_head_by_integer_division():
    q, k, v = rand(1, 8, 10, 16, seed=7), rand(1, 2, 10, 16, seed=8), rand(1, 2, 10, 16, seed=9)
    out, _ = attention_reference(q, k, v)
    for h in range(8):
        single, _ = attention_reference(q[:, h:h + 1], k[:, h // 4:h // 4 + 1], v[:, h // 4:h // 4 + 1])
        torch.testing.assert_close(out[:, h:h + 1], single, atol=1e-12, rtol=0)
    assert repeat_kv(k, 4).shape == (1, 8, 10, 16)
