"""stats.sharding: local statistics merged over simulated ranks equal the statistics of the whole."""

import math

import torch

from lightning_convergence.stats import tensor_stats
from lightning_convergence.stats.sharding import copies, local_view, reduce_sum_of_squares, reduce_tensor_stats


def _two_ranks(locals_, weights, **kwargs):
    """Run rank 1 first, keep the buffer it contributes, then rank 0 sums it in (as SUM would)."""
    seen = {}

    def keep(buffer):
        seen["rank1"] = buffer.clone()
        return buffer

    reduce_tensor_stats(locals_[1], weights, keep, rank=1, world_size=2, **kwargs)
    return reduce_tensor_stats(locals_[0], weights, lambda b: b + seen["rank1"], rank=0, world_size=2, **kwargs)


def test_shards_merge_to_the_whole_and_replicas_count_once():
    torch.manual_seed(0)
    sharded = torch.randn(7, 3)  # split in rows 4 + 3 (uneven, as FSDP2)
    replicated = torch.randn(5)  # the same on both ranks
    empty_on_rank1 = torch.randn(1)  # one row: rank 1 holds nothing
    whole = tensor_stats([sharded, replicated, empty_on_rank1])
    rank0 = tensor_stats([sharded[:4], replicated, empty_on_rank1])
    rank1 = tensor_stats([sharded[4:], replicated, empty_on_rank1[:0]])
    weights = torch.tensor([1.0, 0.5, 1.0])
    merged = _two_ranks([rank0, rank1], weights)
    torch.testing.assert_close(merged, whole, rtol=1e-6, atol=0)
    sums = reduce_sum_of_squares(rank0[:, 0], weights, lambda t: t + rank1[:, 0] * weights)
    torch.testing.assert_close(sums, whole[:, 0], rtol=1e-6, atol=0)


def test_a_nan_on_one_rank_reaches_both_and_counts_are_exact():
    grad = torch.ones(6)
    grad[5] = math.nan  # on rank 1's half
    rank0 = tensor_stats([grad[:3]], count_nonfinite=False)
    rank1 = tensor_stats([grad[3:]], count_nonfinite=False)
    merged = _two_ranks([rank0, rank1], torch.ones(1))
    assert math.isnan(merged[0, 0]) and math.isnan(merged[0, 1]) and merged[0, 2] == 1.0  # a flag
    counts = _two_ranks([tensor_stats([grad[:3]]), tensor_stats([grad[3:]])], torch.ones(1), count_nonfinite=True)
    assert counts[0, 2] == 1.0  # the exact count


def test_plain_tensors_are_replicated_everywhere():
    assert copies(torch.ones(2), world_size=4) == 4 and copies(None, world_size=2) == 2
    assert local_view(None) is None and torch.equal(local_view(torch.ones(2)), torch.ones(2))
