"""DeBERTa-v2/v3 against transformers' DebertaV2ForSequenceClassification, and bugs that
the comparison must catch (in the style of test_mutations.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import transformers
from test_mutations import assert_parity_fails, use_layout
from test_parity import SMALL, WEIGHT_STD, assert_parity, padded_batch, spread_weights
from tokenizers import Tokenizer

from crossrank import Reranker
from crossrank.models import deberta as deberta_module
from crossrank.models import load_model, save_model

# v3 (mxbai-rerank-v1, deberta-v3-*) with 16 buckets in place of 256, so that distances
# past 8 take the log buckets at small lengths
V3 = dict(
    relative_attention=True,
    position_biased_input=False,
    pos_att_type=["p2c", "c2p"],
    position_buckets=16,
    max_relative_positions=-1,
    share_att_key=True,
    norm_rel_ebd="layer_norm",
    type_vocab_size=0,
)
# v2 (deberta-v2-*): absolute positions as well, no buckets (distances clipped to ±32),
# separate position projections, token types and a narrower embedding
V2 = dict(
    relative_attention=True,
    position_biased_input=True,
    pos_att_type=["c2p", "p2c"],
    max_relative_positions=32,
    share_att_key=False,
    type_vocab_size=2,
    embedding_size=24,
)
# deberta-v2-xlarge's convolution after the first layer
CONV = dict(V2, conv_kernel_size=3, conv_act="gelu")
VARIANTS = {"v3": V3, "v2": V2, "v2-conv": CONV}
LENGTHS = [5, 130, 512, 60, 17]  # right-padded to 512: the longest input of these models


def spread_biases(model: torch.nn.Module) -> torch.nn.Module:
    """Nonzero biases (transformers starts them at zero), so that dropping one shows."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    return model


def deberta_logits(folder, variant=V3, lengths=LENGTHS, shape=SMALL, vocab=200, std=WEIGHT_STD):
    """(crossrank's, transformers') logits of a random DeBERTa saved to ``folder``."""
    config = transformers.DebertaV2Config(
        vocab_size=vocab, max_position_embeddings=512, **{**shape, **variant}
    )
    reference = transformers.DebertaV2ForSequenceClassification(config).eval()
    spread_biases(spread_weights(reference, std)).save_pretrained(folder)
    ours = load_model(folder)
    ids, mask, types = padded_batch(lengths, vocab=vocab, pad_id=0)
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        return ours(ids, mask, types), expected


@pytest.mark.parametrize("layout", ["per-row", "padded"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_deberta_matches_transformers(tmp_path, variant, layout, monkeypatch):
    use_layout(layout, monkeypatch)
    actual, expected = deberta_logits(tmp_path, VARIANTS[variant])
    print(f"\ndeberta {variant} {layout}: max |diff| {(actual - expected).abs().max():.2e}")
    assert_parity(actual, expected)


def test_deberta_v3_base_shape_matches_transformers(tmp_path):
    """deberta-v3-base's shape and position scheme (256 buckets), inputs up to 500 tokens.

    Weights at std 0.06: at 0.2 a 768-wide, 12-layer stack amplifies rounding until
    transformers and crossrank differ by 0.16 in float32 and still by 1e-3 in float64;
    at 0.06 by 1.4e-6 and 1e-8, with logits spread over 0.6."""
    base = dict(SMALL, hidden_size=768, num_hidden_layers=12, num_attention_heads=12)
    base.update(intermediate_size=3072)
    v3 = dict(V3, position_buckets=256)
    actual, expected = deberta_logits(tmp_path, v3, [500, 260, 40], base, vocab=1000, std=0.06)
    print(f"\ndeberta v3 base shape: max |diff| {(actual - expected).abs().max():.2e}")
    assert_parity(actual, expected)


@pytest.mark.parametrize("layout", ["per-row", "padded"])
def test_first_token_shortcut_and_left_padding(tmp_path, layout, monkeypatch):
    """forward computes the last layer for the first token alone; left-padded input (not
    what collate builds) takes the full path, and its real tokens' hidden states still match
    transformers', which counts positions from the first column, padding included."""
    use_layout(layout, monkeypatch)
    deberta_logits(tmp_path, V2)
    model = load_model(tmp_path)
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    ids, mask, types = padded_batch([5, 130, 60], vocab=200, pad_id=0)
    with torch.no_grad():
        full = model.encode(ids, mask, types)
        torch.testing.assert_close(model.encode(ids, mask, types, True), full[:, :1])
        torch.testing.assert_close(model(ids, mask, types), model.classify(full))
        ids, mask, types = ids.flip(1), mask.flip(1), types.flip(1)
        hidden = theirs.deberta(input_ids=ids, attention_mask=mask, token_type_ids=types)[0]
        expected = hidden * mask[..., None]
        torch.testing.assert_close(model.encode(ids, mask, types), expected, atol=1e-5, rtol=0)


def test_log_buckets_match_transformers():
    relative = torch.arange(-600, 601)[None]
    expected = transformers.models.deberta_v2.modeling_deberta_v2.make_log_bucket_position(
        relative, 256, 512
    )
    torch.testing.assert_close(deberta_module.log_buckets(relative, 256, 512), expected.long())


def test_round_trip_and_transformers_reads_what_crossrank_saves(tmp_path):
    deberta_logits(tmp_path / "original", CONV)
    model = load_model(tmp_path / "original")
    save_model(model, tmp_path / "saved")
    again = load_model(tmp_path / "saved")
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved")
    ids, mask, types = padded_batch([9, 40, 3], vocab=200, pad_id=0)
    with torch.no_grad():
        logits = model(ids, mask, types)
        torch.testing.assert_close(again(ids, mask, types), logits, atol=0, rtol=0)
        expected = theirs.eval()(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        assert_parity(logits, expected)


def test_reranker_scores_like_transformers(tmp_path):
    from conftest import make_checkpoint

    folder = make_checkpoint(tmp_path, family="deberta", **{**V3, "pos_att_type": ("p2c", "c2p")})
    documents = ["A cross-encoder reads both texts.", "Bananas are yellow. " * 30, "short"]
    query = "how do cross-encoders rank documents"
    scores = Reranker.from_pretrained(folder).score(query, documents, raw=True)
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()  # all-MiniLM-L6-v2's tokenizer.json pads and truncates to 128
    tokenizer.no_truncation()
    expected = []
    for document in documents:
        encoding = tokenizer.encode(query, document)
        ids = torch.tensor([encoding.ids])
        with torch.no_grad():
            expected.append(float(theirs(input_ids=ids).logits[0, 0]))
    assert_parity(torch.tensor(scores), torch.tensor(expected))


# --- injected bugs ----------------------------------------------------------------------


def c2p_dropped(monkeypatch) -> None:
    monkeypatch.setattr(deberta_module, "content_to_position", lambda *args: 0)


def p2c_dropped(monkeypatch) -> None:
    monkeypatch.setattr(deberta_module, "position_to_content", lambda *args: 0)


def linear_clipping(monkeypatch) -> None:
    """Distances clipped to ±buckets instead of log-bucketed (DeBERTa-v2's scheme on v3)."""
    monkeypatch.setattr(deberta_module, "log_buckets", lambda relative, *args: relative)


def plain_scale(monkeypatch) -> None:
    """1/√d, BERT's scale, instead of 1/√(d · (1 + position terms))."""
    init = deberta_module.DisentangledSelfAttention.__init__

    def with_plain_scale(self, config):
        init(self, config)
        self.scale = self.head_dim**-0.5

    monkeypatch.setattr(deberta_module.DisentangledSelfAttention, "__init__", with_plain_scale)


MUTATIONS: dict[str, Callable] = {
    "c2p dropped": c2p_dropped,
    "p2c dropped": p2c_dropped,
    "linear clipping": linear_clipping,
    "plain scale": plain_scale,
}
CASES = [
    (variant, mutation, layout)
    for variant in ("v3", "v2")
    for mutation in MUTATIONS
    for layout in ("per-row", "padded")
    if not (variant == "v2" and mutation == "linear clipping")  # v2 has no buckets
]


@pytest.mark.parametrize(("variant", "mutation", "layout"), CASES)
def test_injected_bug_fails_the_parity_check(variant, mutation, layout, tmp_path, monkeypatch):
    use_layout(layout, monkeypatch)
    MUTATIONS[mutation](monkeypatch)
    logits = deberta_logits(tmp_path, VARIANTS[variant], [5, 130, 60, 17])
    assert_parity_fails(f"deberta {variant} {layout} {mutation}", *logits)
