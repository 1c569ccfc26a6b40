"""The fast backends agree with the reference on random, non-finite, empty and half inputs."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_convergence.stats import resolve_backend, sum_of_squares, tensor_stats
from lightning_convergence.stats.reference import reference_tensor_stats

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
SPECIALS = [float("nan"), float("inf"), -float("inf")]


def _rtol(dtype: torch.dtype) -> float:
    return {torch.float16: 2e-3, torch.bfloat16: 2e-2}.get(dtype, 1e-5)


def _atol(scale: float) -> float:
    """An absolute tolerance far below anything the drawn data can produce: a millionth of the
    smallest drawn sum of squares (``scale**2``). Sums of squares and maxima are sums of
    non-negative terms, so agreement is relative; an absolute 1e-6 would accept zeros for data
    drawn at the 1e-6 scale."""
    return 1e-6 * scale**2


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale: float) -> None:
    torch.testing.assert_close(actual[:, :2], expected[:, :2], rtol=_rtol(dtype), atol=_atol(scale),
                               equal_nan=True)
    assert torch.equal(actual[:, 2], expected[:, 2]), "non-finite counts must be exact"


@st.composite
def tensor_lists(draw):
    dtype = draw(st.sampled_from(DTYPES))
    tensors, smallest = [], math.inf
    for _ in range(draw(st.integers(1, 6))):
        numel = draw(st.sampled_from([0, 1, 3, 17, 256, 20_000]))  # 20k: the CPU dot path
        seed = draw(st.integers(0, 2**16))
        scale = draw(st.sampled_from([1e-6, 1.0, 1e3]))
        smallest = min(smallest, scale)
        generator = torch.Generator().manual_seed(seed)
        tensor = (torch.randn(numel, generator=generator) * scale).to(dtype)
        for special in draw(st.lists(st.sampled_from(SPECIALS), max_size=2)):
            if numel:
                tensor[draw(st.integers(0, numel - 1))] = special
        tensors.append(tensor if draw(st.booleans()) else None)
    return dtype, tensors, smallest


@settings(max_examples=150, deadline=None)
@given(tensor_lists())
def test_foreach_agrees_with_reference(case):
    dtype, tensors, scale = case
    expected = tensor_stats(tensors, backend="reference")
    actual = tensor_stats(tensors, backend="foreach")
    _assert_close(actual, expected, dtype, scale)
    flags = tensor_stats(tensors, backend="foreach", count_nonfinite=False)
    torch.testing.assert_close(flags, tensor_stats(tensors, backend="reference", count_nonfinite=False),
                               rtol=_rtol(dtype), atol=_atol(scale), equal_nan=True)
    assert torch.equal(flags[:, 2], (expected[:, 2] > 0).float())
    sums = sum_of_squares(tensors, backend="foreach")
    torch.testing.assert_close(sums, expected[:, 0], rtol=_rtol(dtype), atol=_atol(scale), equal_nan=True)


def test_nonfinite_propagates_and_counts():
    stats = tensor_stats([torch.tensor([1.0, float("nan"), float("inf")]), torch.tensor([float("-inf")])])
    assert math.isnan(stats[0, 0]) and math.isnan(stats[0, 1]) and stats[0, 2] == 2
    assert stats[1, 0] == math.inf and stats[1, 1] == math.inf and stats[1, 2] == 1


def test_none_and_empty_give_zero_rows():
    stats = tensor_stats([None, torch.empty(0), torch.ones(2, 2)])
    assert stats.tolist() == [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [4.0, 1.0, 0.0]]


def test_all_none_gives_zeros_on_cpu():
    assert tensor_stats([None, None]).shape == (2, 3)
    assert tensor_stats([]).shape == (0, 3)


def test_mixed_dtypes_keep_input_order():
    tensors = [torch.ones(4, dtype=torch.float16), torch.full((2,), 3.0), torch.ones(1, dtype=torch.float64)]
    assert tensor_stats(tensors).tolist() == [[4.0, 1.0, 0.0], [18.0, 3.0, 0.0], [1.0, 1.0, 0.0]]


def test_half_precision_sum_of_squares_does_not_overflow():
    # 300**2 * 1000 = 9e7, far above float16's 65504: it must be accumulated in float32.
    stats = tensor_stats([torch.full((1000,), 300.0, dtype=torch.float16)])
    assert stats[0, 0].item() == pytest.approx(9e7, rel=1e-3)


def test_non_contiguous_input():
    base = torch.randn(8, 6)
    view = base.t()[::2]
    torch.testing.assert_close(tensor_stats([view]), reference_tensor_stats([view.contiguous()]))


def test_sparse_gradient_norm_counts_duplicates():
    indices = torch.tensor([[0, 0, 2]])
    sparse = torch.sparse_coo_tensor(indices, torch.tensor([1.0, 2.0, 2.0]), (4,))
    stats = tensor_stats([sparse])
    assert stats[0].tolist() == [13.0, 3.0, 0.0]  # duplicates sum: [3, 0, 2, 0]


def test_sparse_gradient_from_embedding():
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    embedding(torch.tensor([1, 1, 4])).sum().backward()
    dense = embedding.weight.grad.to_dense()
    torch.testing.assert_close(tensor_stats([embedding.weight.grad]), reference_tensor_stats([dense]))


def test_unsupported_layout_raises_clearly():
    csr = torch.eye(3).to_sparse_csr()
    with pytest.raises(TypeError, match="layout"):
        tensor_stats([csr])


def test_unknown_backend_raises():
    with pytest.raises(ValueError, match="`backend` must be one of .* got 'fast'"):
        tensor_stats([torch.ones(1)], backend="fast")


def test_explicit_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="triton"):
        resolve_backend("triton", torch.device("cpu"))


def test_auto_falls_back_to_foreach_on_cpu():
    assert resolve_backend("auto", torch.device("cpu")) == "foreach"
