"""The CPU inference fast paths kept from issue #15 give the same numbers as the plain ones.

BERT's feed-forward runs ``torch._addmm_activation`` (bias and GELU/ReLU applied in place on
the matrix product) when no gradient is needed; with gradients on, the plain
``activation(linear(x))``. Both must agree bit for bit, and with ``transformers``.
"""

from __future__ import annotations

import pytest
import torch
import transformers

from crossrank.models import load_model

SMALL = dict(
    vocab_size=200,
    max_position_embeddings=64,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    num_labels=1,
)


def random_bert(folder, hidden_act: str):
    config = transformers.BertConfig(hidden_act=hidden_act, **SMALL)
    torch.manual_seed(0)
    reference = transformers.BertForSequenceClassification(config).eval()
    with torch.no_grad():  # larger weights than the default init, so that logits spread out
        for p in reference.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.2)
    reference.save_pretrained(folder)
    return reference, load_model(folder)


def right_padded_batch(lengths, vocab=200):
    generator = torch.Generator().manual_seed(1)
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(5, vocab, (n,), generator=generator)
        mask[row, :n] = 1
    return ids, mask, torch.zeros_like(ids)


@pytest.fixture
def fused_calls(monkeypatch):
    """How often the fused addmm+activation ran."""
    calls = []
    original = torch._addmm_activation

    def counting(*args, **kwargs):
        calls.append(kwargs.get("use_gelu"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "_addmm_activation", counting)
    return calls


@pytest.mark.parametrize("hidden_act", ["gelu", "relu"])
def test_fused_feed_forward_matches_the_plain_one_bit_for_bit(tmp_path, fused_calls, hidden_act):
    reference, ours = random_bert(tmp_path, hidden_act)
    inputs = right_padded_batch([5, 17, 64, 30])
    with torch.inference_mode():
        fused = ours(*inputs)
        expected = reference(input_ids=inputs[0], attention_mask=inputs[1]).logits
    assert fused_calls == [hidden_act == "gelu"] * SMALL["num_hidden_layers"]
    plain = ours(*inputs).detach()  # gradients on: the plain path
    assert len(fused_calls) == SMALL["num_hidden_layers"]
    assert torch.equal(fused, plain)
    assert float(expected.max() - expected.min()) > 0.3  # a match means something
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=0)


def test_training_still_gets_gradients_through_the_feed_forward(tmp_path):
    _, ours = random_bert(tmp_path, "gelu")
    ours.train()
    ours(*right_padded_batch([7, 12])).sum().backward()
    weight = ours.encoder.layer[0].intermediate.dense.weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0
