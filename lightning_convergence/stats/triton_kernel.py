"""The Triton backend of the statistics engine: one multi-tensor pass for a whole group.

Design:

* **Addresses in a table, not one launch per tensor.** The host builds one int64 table per
  group: each tensor's base address (``data_ptr``) and size, each tensor's first block, and for
  each block the tensor it belongs to. The statistics kernel runs one program per block of
  ``block_size * _ITERS`` elements; the program reads its tensor's address from the table and
  casts it to a pointer of the element type (``tl.load(...).to(tl.pointer_type(ELEM))``, as in
  Triton's grouped-GEMM tutorial; the interpreter supports it too). So a call costs the same
  launches for 3 tensors or 3000.
* **Per-block partials, combined in a fixed order.** Each program writes its block's sum of
  squares, max ``|x|`` and non-finite count to a partials buffer. A second, tiny kernel (one
  program per tensor) walks that tensor's partials in order and writes the ``[N, 3]`` result.
  Two launches in all, no atomics, no memset: the result is bitwise deterministic. (Atomics
  would need a zeroed output plus NaN fix-ups afterwards, which is more launches, not fewer.)
* **NaN handled explicitly.** ``tl.max`` and ``tl.maximum`` lower to ``maxnum`` on GPUs, which
  drops NaN (the interpreter's numpy does not, so tests alone would not catch it). Sums always
  propagate NaN, and a sum of squares is NaN exactly when the tensor holds a NaN (squares are
  never negative, so ``inf - inf`` cannot occur). The combine kernel therefore copies a NaN sum
  of squares into the max. Inf needs nothing: it is the largest value under any max.
* **No host sync.** The table is built from host-side integers (addresses, sizes), copied to
  the device from pinned memory with ``non_blocking=True`` and cached while the addresses and
  sizes stay the same, as they do in a steady training loop. Nothing is read back.
* **Accumulation.** float32 for float16/bfloat16/float32 input, float64 for float64 input, then
  the result is cast to float32, matching ``reference_tensor_stats``. Non-finite counts are
  integers until the final cast, so they are exact.

Tensors that are not dense in memory (slices, expanded views) are copied with
``.contiguous()``; dense permutations (transposes, channels-last) are read in place, since
order does not matter to these statistics.

On CPU the kernels run in Triton's interpreter, which only works when ``TRITON_INTERPRET=1``
was set before ``triton`` was first imported (Triton decorates its own ``tl.sum``/``tl.max``
when it is imported, and ``lightning`` imports Triton through ``torch._dynamo``).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_convergence._imports import require_triton

require_triton()

import triton  # noqa: E402  (after the check, so a missing Triton gives the clear error)
import triton.language as tl  # noqa: E402

_ITERS = 4  # blocks of `block_size` elements per program: fewer programs and partials
_COMBINE_BLOCK = 256  # partials the combine kernel reads per loop iteration
_TABLE_CACHE_SIZE = 32

_ELEMENT_TYPES = {
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
    torch.float32: tl.float32,
    torch.float64: tl.float64,
}


@triton.jit
def _block_stats_kernel(
    table_ptr,  # int64: [addresses (N) | sizes (N) | first block (N + 1) | block -> tensor (B)]
    partial_ptr,  # ACC [2, B]: sum of squares, then max |x|
    count_ptr,  # int32 [B]: non-finite values
    n_tensors,
    n_blocks,
    ELEM: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
    ITERS: tl.constexpr,
):
    block = tl.program_id(0).to(tl.int64)
    tensor = tl.load(table_ptr + 3 * n_tensors + 1 + block)
    base = tl.load(table_ptr + tensor).to(tl.pointer_type(ELEM))
    numel = tl.load(table_ptr + n_tensors + tensor)
    first_block = tl.load(table_ptr + 2 * n_tensors + tensor)
    # int64 offsets: a single tensor may hold more than 2**31 elements.
    start = (block - first_block) * (BLOCK * ITERS)

    sumsq = tl.zeros([BLOCK], dtype=ACC)
    absmax = tl.zeros([BLOCK], dtype=ACC)
    count = tl.zeros([BLOCK], dtype=tl.int32)
    for i in tl.static_range(ITERS):
        offsets = start + i * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(base + offsets, mask=offsets < numel, other=0.0).to(ACC)
        magnitude = tl.abs(x)
        sumsq += x * x
        absmax = tl.maximum(absmax, magnitude)  # may drop NaN; the combine kernel restores it
        # NaN fails every comparison and inf is not < inf, so this counts exactly NaN and +-Inf.
        count += tl.where(magnitude < float("inf"), 0, 1)

    tl.store(partial_ptr + block, tl.sum(sumsq, axis=0))
    tl.store(partial_ptr + n_blocks + block, tl.max(absmax, axis=0))
    tl.store(count_ptr + block, tl.sum(count, axis=0))


@triton.jit
def _combine_kernel(
    table_ptr,
    partial_ptr,
    count_ptr,
    out_ptr,  # float32 [N, 3]
    n_tensors,
    n_blocks,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    tensor = tl.program_id(0).to(tl.int64)
    begin = tl.load(table_ptr + 2 * n_tensors + tensor)
    end = tl.load(table_ptr + 2 * n_tensors + tensor + 1)

    sumsq = tl.zeros([BLOCK], dtype=ACC)
    absmax = tl.zeros([BLOCK], dtype=ACC)
    count = tl.zeros([BLOCK], dtype=tl.int64)
    # A fixed walk over this tensor's partials (none for an empty tensor): deterministic.
    for chunk in range(begin, end, BLOCK):
        index = chunk + tl.arange(0, BLOCK)
        mask = index < end
        sumsq += tl.load(partial_ptr + index, mask=mask, other=0.0)
        absmax = tl.maximum(absmax, tl.load(partial_ptr + n_blocks + index, mask=mask, other=0.0))
        count += tl.load(count_ptr + index, mask=mask, other=0).to(tl.int64)

    total = tl.sum(sumsq, axis=0)
    largest = tl.max(absmax, axis=0)
    largest = tl.where(total != total, total, largest)  # NaN sum of squares <=> NaN in the tensor
    tl.store(out_ptr + 3 * tensor, total.to(tl.float32))
    tl.store(out_ptr + 3 * tensor + 1, largest.to(tl.float32))
    tl.store(out_ptr + 3 * tensor + 2, tl.sum(count, axis=0).to(tl.float32))


_TABLE_CACHE: OrderedDict[tuple, tuple[Tensor, int]] = OrderedDict()


def _is_dense(tensor: Tensor) -> bool:
    """Whether the elements fill ``[data_ptr, data_ptr + numel * itemsize)`` exactly once."""
    if tensor.is_contiguous():
        return True
    # A permutation of a contiguous layout (transpose, channels-last) is dense too: sorted by
    # stride, each stride must equal the product of the sizes below it. Size-1 dims don't matter.
    expected = 1
    dims = sorted((d for d in zip(tensor.shape, tensor.stride()) if d[0] != 1), key=lambda d: d[1])
    for size, stride in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def _block_table(
    pointers: tuple[int, ...], sizes: tuple[int, ...], chunk: int, device: torch.device
) -> tuple[Tensor, int]:
    """The kernels' int64 table on ``device`` and the number of blocks; cached by its inputs."""
    key = (device, chunk, pointers, sizes)
    cached = _TABLE_CACHE.get(key)
    if cached is not None:
        _TABLE_CACHE.move_to_end(key)
        return cached

    blocks_per_tensor = [-(-size // chunk) for size in sizes]  # ceil; 0 for an empty tensor
    first_block = [0]
    for count in blocks_per_tensor:
        first_block.append(first_block[-1] + count)
    n_blocks = first_block[-1]
    blocks = torch.repeat_interleave(
        torch.arange(len(sizes), dtype=torch.int64),
        torch.tensor(blocks_per_tensor, dtype=torch.int64),
    )
    host = torch.cat(
        [
            torch.tensor(pointers, dtype=torch.int64),
            torch.tensor(sizes, dtype=torch.int64),
            torch.tensor(first_block, dtype=torch.int64),
            blocks,
        ]
    )
    if device.type == "cuda":
        # Pinned memory makes the copy truly asynchronous. The host buffer is never written
        # again, and the caching host allocator keeps it alive until the copy has run.
        table = host.pin_memory().to(device, non_blocking=True)
    else:
        table = host.to(device)

    _TABLE_CACHE[key] = (table, n_blocks)
    if len(_TABLE_CACHE) > _TABLE_CACHE_SIZE:
        _TABLE_CACHE.popitem(last=False)
    return table, n_blocks


def _check_runnable(device: torch.device) -> None:
    """Raise a clear error where the kernels would crash or silently misbehave."""
    interpreted = not isinstance(_block_stats_kernel, triton.JITFunction)
    library_interpreted = not isinstance(tl.sum, triton.JITFunction)
    if interpreted != library_interpreted:
        raise RuntimeError(
            "TRITON_INTERPRET changed after `triton` was imported (lightning imports it); set"
            " TRITON_INTERPRET=1 before the first import to run the Triton backend on CPU."
        )
    if interpreted and device.type != "cpu":
        # The table holds raw device addresses, which the interpreter would read on the host.
        raise RuntimeError(
            f"With TRITON_INTERPRET=1 the Triton backend runs on CPU tensors, not {device.type!r}."
        )
    if not interpreted and device.type != "cuda":
        raise RuntimeError(
            "The Triton backend runs on CUDA tensors (or on CPU with TRITON_INTERPRET=1),"
            f" not {device.type!r}."
        )


def triton_tensor_stats(tensors: Sequence[Tensor], *, block_size: int = 1024) -> Tensor:
    """Per-tensor ``[sum of squares, max |x|, count of non-finite values]`` in one pass.

    Args:
        tensors: a non-empty list of dense tensors that share one device and one dtype
            (float16, bfloat16, float32 or float64); any strides, possibly empty.
        block_size: elements each program reads per step, a power of two. Each program covers
            ``block_size * 4`` elements of one tensor.

    Returns:
        float32 tensor ``[len(tensors), 3]`` on the tensors' device, matching
        :func:`~lightning_convergence.stats.reference.reference_tensor_stats`: NaN/Inf propagate
        into the first two columns and an empty tensor gives a row of zeros.

    Raises:
        ValueError: empty list, mixed devices or dtypes, an unsupported dtype, or a
            ``block_size`` that is not a power of two.
        RuntimeError: the device cannot run Triton in the current mode (see module docstring).
    """
    if not tensors:
        raise ValueError("`triton_tensor_stats` needs at least one tensor.")
    device, dtype = tensors[0].device, tensors[0].dtype
    if any(t.device != device or t.dtype != dtype for t in tensors):
        raise ValueError("`triton_tensor_stats` takes tensors that share one device and one dtype.")
    if dtype not in _ELEMENT_TYPES:
        raise ValueError(f"`triton_tensor_stats` supports {list(_ELEMENT_TYPES)}, got {dtype}.")
    if block_size < 1 or block_size & (block_size - 1):
        raise ValueError(f"`block_size` must be a power of two, got {block_size}.")
    _check_runnable(device)

    # Hold the (rarely needed) dense copies until the launches below are queued.
    dense = [t.detach() if _is_dense(t) else t.detach().contiguous() for t in tensors]
    pointers = tuple(t.data_ptr() for t in dense)
    sizes = tuple(t.numel() for t in dense)
    table, n_blocks = _block_table(pointers, sizes, block_size * _ITERS, device)

    acc = torch.float64 if dtype == torch.float64 else torch.float32
    acc_type = tl.float64 if dtype == torch.float64 else tl.float32
    # At least one slot, so the kernels never get a null pointer when every tensor is empty.
    partials = torch.empty(2, max(n_blocks, 1), dtype=acc, device=device)
    counts = torch.empty(max(n_blocks, 1), dtype=torch.int32, device=device)
    out = torch.empty(len(dense), 3, dtype=torch.float32, device=device)

    # Triton launches on the current CUDA device and stream; make that the tensors' device.
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        if n_blocks:
            _block_stats_kernel[(n_blocks,)](
                table, partials, counts, len(dense), n_blocks,
                ELEM=_ELEMENT_TYPES[dtype], ACC=acc_type, BLOCK=block_size, ITERS=_ITERS,
                # x * x + acc as one FMA; explicit, since Triton 3.10 changes the default.
                enable_fp_fusion=True,
            )  # fmt: skip
        _combine_kernel[(len(dense),)](
            table, partials, counts, out, len(dense), max(n_blocks, 1),
            ACC=acc_type, BLOCK=_COMBINE_BLOCK, enable_fp_fusion=True,
        )  # fmt: skip
    return out

