"""Numerical parity of crossrank's model code.

BERT and XLM-RoBERTa are compared with ``transformers`` (random small models saved in
Hugging Face layout). JinaBERT has no ``transformers`` implementation, so it is compared
with an independent float64 NumPy forward written here from the architecture's
description, one unpadded sequence at a time, while crossrank runs padded batches.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from crossrank.models import attention as attention_module
from crossrank.models import load_model, save_model
from crossrank.models.attention import alibi_slopes
from crossrank.models.jinabert import JinaBert, JinaBertConfig

# crossrank and transformers differ by under 5e-7 on these models (float32 rounding); the
# bugs injected by test_mutations.py move the logits by 1.6e-4 (tanh GELU) to 0.95.
TOLERANCE = 1e-5
# Random weights with std 0.2, not transformers' 0.02: at 0.02 the logits span about 0.02 and
# real bugs hide under any useful tolerance (token types ignored: 4e-5, tanh GELU: 4e-9).
WEIGHT_STD = 0.2
MIN_SPREAD = 0.3  # the reference logits must differ by this much for a match to mean anything
SMALL = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    num_labels=1,
)


def padded_batch(lengths, vocab, pad_id, seed=0):
    generator = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    ids = torch.full((len(lengths), longest), pad_id)
    mask = torch.zeros((len(lengths), longest), dtype=torch.long)
    types = torch.zeros((len(lengths), longest), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(pad_id + 5, vocab, (n,), generator=generator)
        mask[row, :n] = 1
        types[row, n // 2 : n] = 1
    return ids, mask, types


def spread_weights(model: torch.nn.Module, std: float = WEIGHT_STD) -> torch.nn.Module:
    """Redraw the weight matrices and embeddings with a larger std (see WEIGHT_STD)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, std)
    return model


def assert_parity(actual: torch.Tensor, expected: torch.Tensor) -> None:
    spread = float(expected.max() - expected.min())
    assert spread > MIN_SPREAD, f"reference logits span only {spread:.3g}: a match means little"
    torch.testing.assert_close(actual, expected, atol=TOLERANCE, rtol=0)


def bert_logits(folder, bin_format: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(crossrank's, transformers') logits of a random BERT saved to ``folder``."""
    config = transformers.BertConfig(vocab_size=200, max_position_embeddings=64, **SMALL)
    reference = spread_weights(transformers.BertForSequenceClassification(config).eval())
    reference.save_pretrained(folder)
    if bin_format:  # older checkpoints ship pytorch_model.bin
        torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    ours = load_model(folder)
    ids, mask, types = padded_batch([5, 17, 64, 30], vocab=200, pad_id=0)
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        return ours(ids, mask, types), expected


def xlm_roberta_logits(folder) -> tuple[torch.Tensor, torch.Tensor]:
    """(crossrank's, transformers') logits of a random XLM-RoBERTa saved to ``folder``."""
    config = transformers.XLMRobertaConfig(
        vocab_size=200, max_position_embeddings=66, pad_token_id=1, type_vocab_size=1, **SMALL
    )
    reference = spread_weights(transformers.XLMRobertaForSequenceClassification(config).eval())
    reference.save_pretrained(folder)
    ours = load_model(folder)
    assert ours.config.max_tokens == 64
    ids, mask, _ = padded_batch([64, 3, 40, 12], vocab=200, pad_id=1)
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).logits
        return ours(ids, mask, torch.zeros_like(ids)), expected


@pytest.fixture(params=["per-row", "padded"])
def attention_layout(request, monkeypatch):
    """Both ways attention runs: row by row on packed tokens (CPU) and on the padded
    batch with a bias (CUDA), here both on the CPU."""
    if request.param == "padded":
        monkeypatch.setattr(attention_module, "PER_ROW_DEVICES", ())
    return request.param


@pytest.mark.parametrize("bin_format", [False, True])
def test_bert_matches_transformers(tmp_path, bin_format, attention_layout):
    assert_parity(*bert_logits(tmp_path, bin_format))


def test_xlm_roberta_matches_transformers(tmp_path, attention_layout):
    assert_parity(*xlm_roberta_logits(tmp_path))


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_saved_checkpoint_loads_in_transformers(tmp_path, family):
    from conftest import make_checkpoint

    folder = make_checkpoint(tmp_path, family=family)
    ours = load_model(folder)
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    ids, mask, types = padded_batch([9, 20], vocab=30522, pad_id=0)
    if family == "roberta":
        types = torch.zeros_like(types)
    with torch.no_grad():
        torch.testing.assert_close(
            ours(ids, mask, types),
            theirs(input_ids=ids, attention_mask=mask, token_type_ids=types).logits,
            atol=TOLERANCE,
            rtol=0,
        )


# --- JinaBERT: independent reference --------------------------------------------------


def reference_slopes(heads: int) -> list[float]:
    """ALiBi slopes as the paper states them, for any head count."""
    lower = 2 ** math.floor(math.log2(heads))
    slopes = [2 ** (-8 * (i + 1) / lower) for i in range(lower)]
    doubled = [2 ** (-8 * (i + 1) / (2 * lower)) for i in range(2 * lower)]
    return slopes + doubled[0::2][: heads - lower]


def test_alibi_slopes_for_twelve_heads():
    expected = [2.0**-e for e in (1, 2, 3, 4, 5, 6, 7, 8, 0.5, 1.5, 2.5, 3.5)]
    np.testing.assert_allclose(alibi_slopes(12).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(reference_slopes(12), expected, rtol=1e-12)
    for heads in (1, 2, 4, 6, 8, 16, 20):
        np.testing.assert_allclose(alibi_slopes(heads).numpy(), reference_slopes(heads), rtol=1e-6)


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


erf = np.vectorize(math.erf)


def reference_jinabert_logit(w: dict, config: JinaBertConfig, ids, types) -> float:
    """Forward of one unpadded sequence in float64, straight from the description."""
    heads, eps, inter = config.num_attention_heads, config.layer_norm_eps, config.intermediate_size
    length = len(ids)

    def linear(x, name, bias=True):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if bias else y

    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.token_type_embeddings.weight"][types]
    )
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    position = np.arange(length)
    distance = np.abs(position[:, None] - position[None, :])
    alibi = -np.array(reference_slopes(heads))[:, None, None] * distance  # (heads, L, L)
    for n in range(config.num_hidden_layers):
        p = f"encoder.layer.{n}."
        q, k, v = (
            linear(x, p + f"attention.self.{name}").reshape(length, heads, -1).transpose(1, 0, 2)
            for name in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1]) + alibi
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        context = (probs @ v).transpose(1, 0, 2).reshape(length, -1)
        x = layer_norm(
            linear(context, p + "attention.output.dense") + x,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        hidden = linear(x, p + "mlp.gated_layers", bias=False)
        gate, up = hidden[:, :inter], hidden[:, inter:]
        if config.feed_forward_type == "geglu":
            activated = 0.5 * gate * (1 + erf(gate / math.sqrt(2)))
        else:
            activated = np.maximum(gate, 0)
        x = layer_norm(
            linear(activated * up, p + "mlp.wo") + x,
            w[p + "mlp.layernorm.weight"],
            w[p + "mlp.layernorm.bias"],
            eps,
        )
    pooled = np.tanh(linear(x[0], "pooler.dense"))
    return float(linear(pooled, "classifier")[0])


@pytest.mark.parametrize("feed_forward_type", ["geglu", "reglu"])
@pytest.mark.parametrize("prefixed", [True, False])
def test_jinabert_matches_reference(
    tmp_path, feed_forward_type, prefixed, monkeypatch, attention_layout
):
    config = JinaBertConfig(vocab_size=300, feed_forward_type=feed_forward_type, **SMALL)
    torch.manual_seed(1)
    model = JinaBert(config)
    with torch.no_grad():  # larger weights than the default init make differences visible
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.15)
    save_model(model, tmp_path)
    if not prefixed:  # checkpoints are published both with and without the bert. prefix
        state = load_file(tmp_path / "model.safetensors")
        save_file(
            {k.removeprefix("bert."): v for k, v in state.items()}, tmp_path / "model.safetensors"
        )
        assert not any(k.startswith("bert.") for k in load_file(tmp_path / "model.safetensors"))
    loaded = load_model(tmp_path)
    weights = {k: v.double().numpy() for k, v in loaded.state_dict().items()}

    # several query blocks at 2048 tokens exercise the blocked ALiBi attention
    monkeypatch.setattr(attention_module, "MAX_SCORE_ELEMENTS", 4 * 4 * 2048 * 300)
    lengths = [8, 2048, 100, 513]
    ids, mask, types = padded_batch(lengths, vocab=300, pad_id=0, seed=3)
    with torch.no_grad():
        actual = loaded(ids, mask, types)[:, 0].numpy()
    expected = [
        reference_jinabert_logit(weights, config, ids[row, :n].numpy(), types[row, :n].numpy())
        for row, n in enumerate(lengths)
    ]
    assert np.ptp(expected) > 0.05  # the logits differ, so a match is meaningful
    np.testing.assert_allclose(actual, expected, atol=TOLERANCE, rtol=0)


def test_alibi_bias_is_built_for_the_batch_not_the_maximum_length():
    model = JinaBert(JinaBertConfig(vocab_size=100, max_position_embeddings=8192, **SMALL))
    buffers = sum(b.numel() for b in model.buffers())
    assert buffers == SMALL["num_attention_heads"] * SMALL["num_hidden_layers"]  # slopes only


@pytest.mark.parametrize("family", [JinaBert, None])
def test_first_token_only_last_layer_matches_the_full_encoder(attention_layout, family):
    """forward computes the last layer for [CLS] alone; it must equal the full encoder's
    first position, and inputs that are not right-padded take the full path."""
    torch.manual_seed(2)
    if family is None:
        from crossrank.models.bert import Bert, BertConfig

        model = Bert(BertConfig(vocab_size=200, max_position_embeddings=64, **SMALL)).eval()
    else:
        model = family(JinaBertConfig(vocab_size=200, **SMALL)).eval()
    ids, mask, types = padded_batch([5, 17, 64, 30], vocab=200, pad_id=0)
    with torch.no_grad():
        full = model.encode(ids, mask, types)
        first = model.encode(ids, mask, types, first_only=True)
        torch.testing.assert_close(first, full[:, :1], atol=1e-5, rtol=0)
        torch.testing.assert_close(model(ids, mask, types), model.classify(full))
        left = mask.flip(1)  # left padding: not what collate builds, still correct
        left_ids, left_types = ids.flip(1), types.flip(1)
        torch.testing.assert_close(
            model.encode(left_ids, left, left_types, first_only=True),
            model.encode(left_ids, left, left_types)[:, :1],
        )
