"""ModernBERT against transformers' ModernBertForSequenceClassification, and bugs that the
comparison must catch (in the style of test_mutations.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest
import torch
import transformers
from test_deberta import spread_biases
from test_mutations import assert_parity_fails, use_layout
from test_parity import WEIGHT_STD, assert_parity, padded_batch, spread_weights
from tokenizers import Tokenizer

from crossrank import Reranker
from crossrank.models import load_model, save_model
from crossrank.models import modernbert as modernbert_module

# Four layers, global and local in turn, a 16-token window (each token sees ±8) and bases
# far apart, so that a window or base mixed up between the two kinds of layer shows.
SMALL = dict(
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=4,
    num_attention_heads=4,
    global_attn_every_n_layers=2,
    local_attention=16,
    global_rope_theta=160_000.0,
    local_rope_theta=10_000.0,
    max_position_embeddings=2048,
    pad_token_id=0,
    bos_token_id=1,
    cls_token_id=1,
    eos_token_id=2,
    sep_token_id=2,
    num_labels=1,
)
# gte-reranker-modernbert-base has no biases; the options exist, so one variant has them all
BIASED = dict(norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True)
VARIANTS = {"cls": {}, "mean": dict(classifier_pooling="mean"), "biased": BIASED}
# right-padded to 1,100 tokens: 68 windows, three query blocks of the local attention
LENGTHS = [5, 130, 1100, 60, 17, 513]


def modernbert_logits(
    folder, variant=None, lengths=LENGTHS, shape=SMALL, vocab=200, std=WEIGHT_STD
):
    """(crossrank's, transformers') logits of a random ModernBERT saved to ``folder``."""
    config = transformers.ModernBertConfig(vocab_size=vocab, **shape, **(variant or {}))
    reference = transformers.ModernBertForSequenceClassification(config).eval()
    spread_weights(reference, std)
    if config.attention_bias:
        spread_biases(reference)
    reference.save_pretrained(folder)
    ours = load_model(folder)
    ids, mask, types = padded_batch(lengths, vocab=vocab, pad_id=0)
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).logits
        return ours(ids, mask, types), expected


@pytest.mark.parametrize("layout", ["per-row", "padded"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_modernbert_matches_transformers(tmp_path, variant, layout, monkeypatch):
    use_layout(layout, monkeypatch)
    actual, expected = modernbert_logits(tmp_path, VARIANTS[variant])
    print(f"\nmodernbert {variant} {layout}: max |diff| {(actual - expected).abs().max():.2e}")
    assert_parity(actual, expected)


def test_modernbert_base_shape_matches_transformers(tmp_path):
    """gte-reranker-modernbert-base's shape (22 layers, every third global, a 128-token
    window), inputs up to 1,000 tokens. std 0.04: at 0.06 (each matrix a gain of
    1.7) the 22 layers amplify float32 rounding itself past 1e-5 (2.6e-5 measured)."""
    base = dict(SMALL, hidden_size=768, intermediate_size=1152, num_hidden_layers=22)
    base.update(num_attention_heads=12, global_attn_every_n_layers=3, local_attention=128)
    actual, expected = modernbert_logits(tmp_path, None, [1000, 300, 40], base, 1000, 0.04)
    print(f"\nmodernbert base shape: max |diff| {(actual - expected).abs().max():.2e}")
    assert_parity(actual, expected)


def test_config_reads_flat_and_nested_rotary_bases():
    flat = modernbert_module.ModernBertConfig.from_dict(
        {"global_rope_theta": 80_000.0, "local_rope_theta": 5_000.0, "num_hidden_layers": 4}
    )
    nested = modernbert_module.ModernBertConfig.from_dict(
        transformers.ModernBertConfig(
            global_rope_theta=80_000.0, local_rope_theta=5_000.0, num_hidden_layers=4
        ).to_dict()
    )
    for config in (flat, nested):
        assert (config.global_rope_theta, config.local_rope_theta) == (80_000.0, 5_000.0)
        assert config.layer_types == ["full_attention"] + ["sliding_attention"] * 2 + [
            "full_attention"
        ]


def test_round_trip_and_transformers_reads_what_crossrank_saves(tmp_path):
    modernbert_logits(tmp_path / "original", VARIANTS["mean"])
    model = load_model(tmp_path / "original")
    save_model(model, tmp_path / "saved")
    again = load_model(tmp_path / "saved")
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved")
    ids, mask, _ = padded_batch([5, 300, 40], vocab=200, pad_id=0)
    with torch.no_grad():
        logits = model(ids, mask)
        torch.testing.assert_close(again(ids, mask), logits, atol=0, rtol=0)
        assert_parity(logits, theirs.eval()(input_ids=ids, attention_mask=mask).logits)


def test_reranker_scores_a_long_pair_like_transformers(tmp_path):
    """Through Reranker: the tokenizer's pair, one document past many windows."""
    from conftest import all_minilm_l6_v2_path

    modernbert_logits(tmp_path, vocab=30522)
    shutil.copy(all_minilm_l6_v2_path() / "tokenizer.json", tmp_path)
    documents = ["A cross-encoder reads both texts.", "Bananas are yellow. " * 150, "short"]
    query = "how do cross-encoders rank documents"
    scores = Reranker.from_pretrained(tmp_path).score(query, documents, raw=True)
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    tokenizer.no_padding()  # all-MiniLM-L6-v2's tokenizer.json pads and truncates to 128
    tokenizer.no_truncation()
    expected = []
    for document in documents:
        ids = torch.tensor([tokenizer.encode(query, document).ids])
        with torch.no_grad():
            expected.append(float(theirs(input_ids=ids).logits[0, 0]))
    assert ids.shape[1] < 20 and max(len(tokenizer.encode(query, d).ids) for d in documents) > 600
    assert_parity(torch.tensor(scores), torch.tensor(expected))


# --- injected bugs ----------------------------------------------------------------------


def global_base_everywhere(monkeypatch) -> None:
    """The local layers turned with the global layers' rotary base."""
    theta = modernbert_module.ModernBertConfig.rope_theta
    monkeypatch.setattr(
        modernbert_module.ModernBertConfig,
        "rope_theta",
        lambda self, _kind: theta(self, "full_attention"),
    )


def local_window_ignored(monkeypatch) -> None:
    """Every layer global: the sliding window never applied."""
    init = modernbert_module.ModernBertAttention.__init__

    def all_global(self, config, sliding):
        init(self, config, sliding=False)

    monkeypatch.setattr(modernbert_module.ModernBertAttention, "__init__", all_global)


def window_off_by_one(monkeypatch) -> None:
    """Each token sees ±(local_attention/2 - 1): the window's edge keys left out."""
    attention = modernbert_module.local_attention
    monkeypatch.setattr(
        modernbert_module,
        "local_attention",
        lambda q, k, v, half, real: attention(q, k, v, half - 1, real),
    )


def rotate_interleaved(monkeypatch) -> None:
    """GPT-J's rotary layout (pairs 2i, 2i+1) in place of rotate_half's (i, i + dim/2)."""

    def interleaved(x, cos, sin):
        pairs = x.float().unflatten(-1, (-1, 2))
        turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        cos_i = cos[..., : cos.shape[-1] // 2].repeat_interleave(2, dim=-1)
        sin_i = sin[..., : sin.shape[-1] // 2].repeat_interleave(2, dim=-1)
        return (x.float() * cos_i + turned * sin_i).to(x.dtype)

    monkeypatch.setattr(modernbert_module, "rotate", interleaved)


MUTATIONS: dict[str, Callable] = {
    "global rotary base in the local layers": global_base_everywhere,
    "local window ignored": local_window_ignored,
    "window one token short": window_off_by_one,
    "interleaved rotary halves": rotate_interleaved,
}


@pytest.mark.parametrize("layout", ["per-row", "padded"])
@pytest.mark.parametrize("mutation", MUTATIONS)
def test_injected_bug_fails_the_parity_check(mutation, layout, tmp_path, monkeypatch):
    use_layout(layout, monkeypatch)
    MUTATIONS[mutation](monkeypatch)
    assert_parity_fails(f"modernbert {layout} {mutation}", *modernbert_logits(tmp_path))
