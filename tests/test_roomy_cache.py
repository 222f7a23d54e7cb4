"""`RoomyLayer` holds exactly what transformers' `DynamicLayer` holds after the same operations, writes
in place while its room lasts, and generation over it is the same to the bit."""

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache
from transformers.cache_utils import DynamicLayer

from empo2.engines.roomy_cache import MIN_ROOM, RoomyLayer, roomy_cache

pytestmark = pytest.mark.isa  # run again under an AVX2 cap (make test-isa)


def _states(gen, rows, positions):
    return torch.randn(rows, 2, positions, 4, generator=gen), torch.randn(rows, 2, positions, 4, generator=gen)


def _same(a, b):
    assert a.keys.shape == b.keys.shape and torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_updates_hold_what_a_dynamic_layer_holds_and_write_in_place():
    gen = torch.Generator().manual_seed(0)
    roomy, plain = RoomyLayer(), DynamicLayer()
    prefill = _states(gen, 3, 10)
    for layer in (roomy, plain):
        layer.update(*prefill)
    _same(roomy, plain)
    buffer = roomy._key_buffer
    assert buffer.shape[-2] == 10 + MIN_ROOM  # a quarter of 10 is less than the minimum room
    for _ in range(MIN_ROOM):  # decode steps: one position each, all inside the room
        step = _states(gen, 3, 1)
        out = roomy.update(*step)
        plain.update(*step)
        _same(roomy, plain)
        assert roomy._key_buffer is buffer and out[0].data_ptr() == buffer.data_ptr()
    big = _states(gen, 3, 300)  # past the room: a new buffer, a quarter larger than its content
    roomy.update(*big)
    plain.update(*big)
    _same(roomy, plain)
    assert roomy._key_buffer is not buffer and roomy._key_buffer.shape[-2] == 374 + 374 // 4


@pytest.mark.parametrize("operation", ["crop", "select rows", "reset"])
def test_a_layer_changed_from_outside_continues_from_its_new_contents(operation):
    gen = torch.Generator().manual_seed(1)
    roomy, plain = RoomyLayer(), DynamicLayer()
    first = _states(gen, 4, 12)
    for layer in (roomy, plain):
        layer.update(*first)
        if operation == "crop":
            layer.crop(-5)
        elif operation == "select rows":
            layer.batch_select_indices(torch.tensor([2, 0]))
        else:
            layer.reset()
    rows = 4 if operation != "select rows" else 2
    for _ in range(3):
        step = _states(gen, rows, 1)
        roomy.update(*step)
        plain.update(*step)
        _same(roomy, plain)


def test_generation_over_a_roomy_cache_is_the_same_to_the_bit(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    torch.manual_seed(0)
    ids = torch.randint(5, 500, (3, 20))
    mask = torch.ones_like(ids)
    mask[1, :6] = 0  # a left-padded row
    outs = []
    for cache in (DynamicCache(), roomy_cache()):
        with torch.no_grad():
            outs.append(model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=80, min_new_tokens=80,
                                       do_sample=False, past_key_values=cache, pad_token_id=0,
                                       output_logits=True, return_dict_in_generate=True))
    assert all(type(layer) is RoomyLayer for layer in outs[1].past_key_values.layers)
    assert torch.equal(outs[0].sequences, outs[1].sequences)
    assert all(torch.equal(a, b) for a, b in zip(outs[0].logits, outs[1].logits))


def test_a_cache_built_from_tensors_holds_them_without_copying_and_never_writes_into_them():
    gen = torch.Generator().manual_seed(2)
    keys, values = _states(gen, 2, 7)
    held = (keys.clone(), values.clone())
    cache = roomy_cache([(keys, values)])
    layer = cache.layers[0]
    assert layer.keys is keys and layer.values is values and cache.get_seq_length() == 7
    plain = DynamicLayer()
    plain.update(keys, values)
    step = _states(gen, 2, 1)
    cache.update(*step, 0)
    plain.update(*step)
    _same(layer, plain)
    assert torch.equal(keys, held[0]) and torch.equal(values, held[1])  # moved to a buffer with room, not written into
    assert layer._key_buffer.shape[-2] == 8 + MIN_ROOM
