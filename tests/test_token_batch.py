"""Padded micro-batches give the same log-probs as each row on its own."""

import torch
from transformers import AutoModelForCausalLM

from empo2.token_batch import micro_batches, pack, response_logprobs


def test_pack_layout():
    b = pack([[1, 2, 3], [4]], [[5], [6, 7]], pad_id=0)
    assert b.input_ids.tolist() == [[1, 2, 3, 5, 0], [0, 0, 4, 6, 7]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 0], [0, 0, 1, 1, 1]]
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 3], [0, 0, 0, 1, 2]]
    assert b.response_ids.tolist() == [[5, 0], [6, 7]]
    assert b.response_mask.tolist() == [[1, 0], [1, 1]]
    assert (b.real_tokens, b.padded_tokens) == (7, 10)


def test_padding_does_not_change_logprobs(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(10, 1000, (n,), generator=g).tolist() for n in (5, 17, 9)]
    responses = [torch.randint(10, 1000, (n,), generator=g).tolist() for n in (3, 1, 6)]
    with torch.no_grad():
        together = response_logprobs(model, pack(prompts, responses, 0))
        for i, (p, r) in enumerate(zip(prompts, responses)):
            alone = response_logprobs(model, pack([p], [r], 0))
            assert torch.allclose(together[i, : len(r)], alone[0], atol=1e-5)
            assert torch.all(together[i, len(r):] == 0)
        # Same numbers as a plain full-sequence forward pass.
        p, r = prompts[1], responses[2]
        full = model(torch.tensor([p + r])).logits.log_softmax(-1)[0]
        plain = [full[len(p) - 1 + t, tok].item() for t, tok in enumerate(r)]
        assert response_logprobs(model, pack([p], [r], 0))[0].tolist() == __import__("pytest").approx(plain, abs=1e-5)


def test_micro_batches_group_similar_lengths():
    assert micro_batches([5, 50, 7, 40], 2) == [[1, 3], [2, 0]]
    assert micro_batches([1, 2, 3], 8) == [[2, 1, 0]]
