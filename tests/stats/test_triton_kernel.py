"""The Triton kernel agrees with the reference; on CPU it runs in Triton's interpreter.

Triton reads ``TRITON_INTERPRET`` when it is first imported (it decorates its own ``tl.sum``,
``tl.zeros``, ... at that moment; setting it later breaks every kernel), and Lightning imports
Triton through ``torch._dynamo``. So:

* when Triton is not imported yet (this file alone, or ``tests/stats``), this file sets
  ``TRITON_INTERPRET=1`` before its imports and the interpreter tests run in this process;
* when an earlier test module has imported Triton in compiled mode (the full suite imports
  Lightning first), the interpreter tests are skipped here and one test re-runs this file in a
  fresh process.

The CUDA test needs compiled mode, so it mirrors that: in this process when Triton is compiled,
otherwise in a fresh process with ``TRITON_INTERPRET=0``.
"""

import os
import subprocess
import sys

import pytest

_CHILD_FLAG = "LC_TRITON_TEST_CHILD"  # set in the re-run process, so it never spawns another
_saved_interpret = os.environ.get("TRITON_INTERPRET")
if "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # an explicit TRITON_INTERPRET=0 wins
try:
    triton = pytest.importorskip("triton")
    import torch
    import triton.language as tl

    from lightning_convergence.stats import sum_of_squares, tensor_stats
    from lightning_convergence.stats import triton_kernel
    from lightning_convergence.stats.reference import reference_tensor_stats
    from lightning_convergence.stats.triton_kernel import triton_tensor_stats
finally:
    # Triton's mode is fixed now; don't leak the variable into other test modules.
    if _saved_interpret is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _saved_interpret

INTERPRETED = not isinstance(tl.sum, triton.JITFunction)
IS_CHILD = os.environ.get(_CHILD_FLAG) == "1"
needs_interpreter = pytest.mark.skipif(
    not INTERPRETED, reason="Triton was imported in compiled mode; see the fresh-process test"
)

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
RTOL = {torch.float32: 1e-5, torch.float64: 1e-6, torch.float16: 1e-4, torch.bfloat16: 1e-4}
NAN, INF = float("nan"), float("inf")


@pytest.fixture(autouse=True)
def _interpret_env(monkeypatch):
    # The dispatcher checks the variable at call time (see stats/backends.py).
    if INTERPRETED:
        monkeypatch.setenv("TRITON_INTERPRET", "1")


def _assert_matches(actual: torch.Tensor, tensors, dtype: torch.dtype) -> None:
    expected = reference_tensor_stats(tensors)
    assert actual.dtype == torch.float32 and actual.shape == expected.shape
    torch.testing.assert_close(actual[:, 0], expected[:, 0], rtol=RTOL[dtype], atol=0.0, equal_nan=True)
    # max |x| is one input value, exact in float32 for every supported dtype.
    torch.testing.assert_close(actual[:, 1], expected[:, 1], rtol=0.0, atol=0.0, equal_nan=True)
    assert torch.equal(actual[:, 2], expected[:, 2]), "non-finite counts must be exact"


def _random(numel: int, dtype: torch.dtype, seed: int, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(numel, generator=generator) * scale).to(dtype)


def _non_contiguous(dtype: torch.dtype) -> list:
    base = _random(600, dtype, seed=7)
    return [
        base[::3],  # strided slice: copied
        base[:480].view(24, 20).t(),  # transpose: dense, read in place
        base[:480].view(24, 20)[2:20, 3:17],  # 2-D slice: copied
        base[:1].expand(5, 7),  # zero stride: copied
        base[:120].view(2, 3, 4, 5).contiguous(memory_format=torch.channels_last),
        base[10:110],  # offset view of a contiguous tensor
    ]


@needs_interpreter
@pytest.mark.parametrize("dtype", DTYPES)
def test_random_mixed_sizes_match_reference(dtype):
    sizes = [0, 1, 2, 15, 16, 17, 63, 64, 65, 333, 1000, 0, 1]
    tensors = [_random(n, dtype, seed=i, scale=10.0 ** (i % 5 - 2)) for i, n in enumerate(sizes)]
    tensors.append(_random(24, dtype, seed=99).view(2, 3, 4))
    # block_size=4: 16 elements per program, so tensors span many blocks with ragged tails.
    _assert_matches(triton_tensor_stats(tensors, block_size=4), tensors, dtype)
    _assert_matches(triton_tensor_stats(tensors), tensors, dtype)  # default: one block each


@needs_interpreter
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_propagate_and_count(dtype):
    tensors = []
    for i, specials in enumerate([[NAN], [INF], [-INF], [INF, -INF], [NAN, INF, -INF], [NAN, NAN]]):
        tensor = _random(50, dtype, seed=i)
        for j, value in enumerate(specials):
            tensor[(17 * j + 3 * i) % 50] = value
        tensors.append(tensor)
    tensors += [torch.tensor([NAN], dtype=dtype), torch.tensor([-INF], dtype=dtype)]
    tail = _random(37, dtype, seed=11)
    tail[-1] = NAN  # in the ragged last block
    tensors += [tail, torch.full((9,), INF, dtype=dtype), torch.empty(0, dtype=dtype)]

    stats = triton_tensor_stats(tensors, block_size=4)
    _assert_matches(stats, tensors, dtype)
    assert stats[0, :2].isnan().all() and stats[1, :2].isinf().all() and stats[2, :2].isinf().all()
    assert stats[4, 2] == 3 and stats[5, 2] == 2 and stats[8, :2].isnan().all()


@needs_interpreter
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs(dtype):
    tensors = _non_contiguous(dtype)
    _assert_matches(triton_tensor_stats(tensors, block_size=8), tensors, dtype)


@needs_interpreter
def test_many_blocks_per_tensor_and_determinism(monkeypatch):
    # 300 elements in programs of 4: 75 partials, five passes of a 16-wide combine loop.
    monkeypatch.setattr(triton_kernel, "_COMBINE_BLOCK", 16)
    tensors = [_random(300, torch.float32, seed=1), _random(5, torch.float32, seed=2)]
    tensors[0][250] = INF
    first = triton_tensor_stats(tensors, block_size=1)
    _assert_matches(first, tensors, torch.float32)
    tensors[0][250] = 0.5  # same addresses: the cached table is reused, the values are re-read
    second = triton_tensor_stats(tensors, block_size=1)
    _assert_matches(second, tensors, torch.float32)
    assert torch.equal(second, triton_tensor_stats(tensors, block_size=1)), "must be deterministic"


@needs_interpreter
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # numpy, in the interpreter
def test_extreme_magnitudes():
    # float16 squares overflow float16 but not the float32 accumulator.
    half = torch.tensor([65504.0, -65504.0, 1e-7], dtype=torch.float16)
    # bfloat16 squares overflow float32: inf, as in the reference.
    big = torch.tensor([1e30, -3e38, 1.0], dtype=torch.bfloat16)
    tiny = torch.tensor([1e-300, 1e300], dtype=torch.float64)  # float64 accumulates in float64
    for tensor in (half, big, tiny):
        _assert_matches(triton_tensor_stats([tensor]), [tensor], tensor.dtype)
    assert torch.isfinite(triton_tensor_stats([half])[0, 0])


@needs_interpreter
def test_public_dispatcher_with_triton_backend():
    tensors = [
        _random(40, torch.float32, seed=1),
        None,
        _random(33, torch.bfloat16, seed=2),
        torch.empty(0),
        _random(12, torch.float64, seed=3).view(3, 4).t(),
        torch.tensor([1.0, NAN, -INF]),
        torch.sparse_coo_tensor(
            torch.tensor([[0, 2, 2]]), torch.tensor([3.0, 1.0, 3.0]), (5,), check_invariants=True
        ),
    ]
    actual = tensor_stats(tensors, backend="triton")
    expected = tensor_stats(tensors, backend="reference")
    torch.testing.assert_close(actual[:, :2], expected[:, :2], rtol=1e-5, atol=0.0, equal_nan=True)
    assert torch.equal(actual[:, 2], expected[:, 2])
    assert actual[6].tolist() == [25.0, 4.0, 0.0]  # coalesced sparse values [3, 4]
    sums = sum_of_squares(tensors, backend="triton")
    torch.testing.assert_close(sums, expected[:, 0], rtol=1e-5, atol=0.0, equal_nan=True)


@needs_interpreter
def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="at least one"):
        triton_tensor_stats([])
    with pytest.raises(ValueError, match="one dtype"):
        triton_tensor_stats([torch.ones(2), torch.ones(2, dtype=torch.float64)])
    with pytest.raises(ValueError, match="supports"):
        triton_tensor_stats([torch.ones(2, dtype=torch.int32)])
    with pytest.raises(ValueError, match="power of two"):
        triton_tensor_stats([torch.ones(2)], block_size=12)


@pytest.mark.skipif(INTERPRETED, reason="Triton is in interpreter mode in this process")
def test_compiled_mode_rejects_cpu_tensors():
    if torch.cuda.is_available():
        pytest.skip("compiled mode runs CUDA tensors here; see the CUDA test")
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        triton_tensor_stats([torch.ones(3)])


def _run_child(select: str, interpret: str) -> None:
    env = {**os.environ, "TRITON_INTERPRET": interpret, _CHILD_FLAG: "1"}
    command = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k", select]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert " passed" in result.stdout, result.stdout[-4000:]


@pytest.mark.skipif(INTERPRETED or IS_CHILD, reason="the interpreter tests ran in this process")
def test_interpreter_tests_in_fresh_process():
    _run_child("not cuda and not fresh_process and not compiled_mode", interpret="1")


def _cuda_check() -> None:
    dtype_tensors = {
        dtype: [_random(n, dtype, seed=n).cuda() for n in (0, 1, 4097, 70_000)] + [
            _random(600, dtype, seed=5).cuda().view(20, 30).t(),
            _random(600, dtype, seed=6).cuda()[::3],
            torch.tensor([1.0, NAN, INF], dtype=dtype, device="cuda"),
            torch.tensor([-INF, 2.0], dtype=dtype, device="cuda"),
        ]
        for dtype in DTYPES
    }
    for dtype, tensors in dtype_tensors.items():
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # any host read-back inside raises
        try:
            first = triton_tensor_stats(tensors)
            second = triton_tensor_stats(tensors)  # the cached-table path
        finally:
            torch.cuda.set_sync_debug_mode("default")
        _assert_matches(first, tensors, dtype)
        assert torch.equal(first, second)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_reference_without_host_sync():
    if not INTERPRETED:
        _cuda_check()
    elif not IS_CHILD:
        _run_child("cuda", interpret="0")
    else:
        pytest.skip("Triton is in interpreter mode in this process")
