"""Per-group reduction agrees with its loop reference, NaN included."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_convergence.stats.grouping import reduce_by_group, reference_reduce_by_group


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e6), st.sampled_from([0.0, 1.0, 2.0, float("nan"), float("inf")]),
                          st.integers(0, 3)), min_size=1, max_size=12),
       st.integers(1, 4))
def test_reduce_by_group_matches_reference(rows, extra_groups):
    num_groups = max(r[2] for r in rows) + extra_groups
    stats = torch.tensor([[r[0], r[1], float(r[1] != r[1] or r[1] == float("inf"))] for r in rows])
    index = torch.tensor([r[2] for r in rows])
    torch.testing.assert_close(reduce_by_group(stats, index, num_groups),
                               reference_reduce_by_group(stats, index, num_groups), equal_nan=True)


def test_cpu_scalar_refuses_other_devices():
    import pytest

    from lightning_convergence.stats.host import cpu_scalar

    assert cpu_scalar(torch.tensor(2.0)) == 2.0
    with pytest.raises(ValueError, match="CPU tensors only.*meta"):
        cpu_scalar(torch.empty((), device="meta"))
