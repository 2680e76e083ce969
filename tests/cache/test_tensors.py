"""KVTensors: per-layer paged K/V views, sizing by count or budget, single-copy page copies."""

import pytest
import torch
from astrai.cache import KVTensors


def test_shapes_views_and_capacity():
    kv = KVTensors(3, 2, 8, page_size=4, num_pages=5, dtype=torch.float32)
    assert len(kv.caches) == 3
    for k, v in kv.caches:
        assert k.shape == v.shape == (5, 4, 2, 8)
        assert k.is_contiguous() and v.is_contiguous()
        assert k.dtype == torch.float32 and k.device.type == "cpu"
    assert kv.capacity_tokens == 20
    assert kv.bytes_per_page == 2 * 3 * 4 * 2 * 8 * 4
    assert kv.capacity_bytes == 5 * kv.bytes_per_page
    # a slot index into the flattened view is page * page_size + offset
    k0 = kv.caches[0][0]
    k0.view(-1, 2, 8)[2 * 4 + 3] = 1.5
    assert k0[2, 3].eq(1.5).all()


def test_sized_from_a_memory_budget_in_bf16():
    per_page = KVTensors.page_bytes(2, 1, 4, 16, torch.bfloat16)
    assert per_page == 2 * 2 * 16 * 1 * 4 * 2
    kv = KVTensors(2, 1, 4, page_size=16, memory_budget_bytes=per_page * 7 + per_page - 1)
    assert kv.num_pages == 7 and kv.dtype == torch.bfloat16
    capped = KVTensors(2, 1, 4, page_size=16, num_pages=3, memory_budget_bytes=per_page * 7)
    assert capped.num_pages == 3


def test_copy_page_copies_every_layer_k_and_v():
    kv = KVTensors(2, 1, 2, page_size=2, num_pages=3, dtype=torch.float32)
    kv.buffer.copy_(torch.arange(kv.buffer.numel(), dtype=torch.float32).view_as(kv.buffer))
    before = kv.buffer.clone()
    kv.copy_page(0, 2)
    for k, v in kv.caches:
        assert torch.equal(k[2], k[0]) and torch.equal(v[2], v[0])
    assert torch.equal(kv.buffer[:, :, :2], before[:, :, :2])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "give num_pages or memory_budget_bytes"),
        ({"num_pages": 0}, "num_pages"),
        ({"memory_budget_bytes": 10}, "holds no page"),
        ({"num_pages": 2, "page_size": 0}, "page_size"),
        ({"num_pages": 2, "dtype": torch.int32}, "floating-point"),
    ],
)
def test_bad_sizes_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KVTensors(2, 1, 4, **kwargs)
