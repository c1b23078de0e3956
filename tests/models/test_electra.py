"""ELECTRA against transformers' ElectraForSequenceClassification, and bugs that the
comparison must catch (in the style of test_mutations.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
import transformers
from test_deberta import spread_biases
from test_mutations import assert_parity_fails, use_layout
from test_parity import SMALL, WEIGHT_STD, assert_parity, padded_batch, spread_weights
from tokenizers import Tokenizer

from crossrank import Reranker
from crossrank.models import electra as electra_module
from crossrank.models import load_model, save_model

LENGTHS = [5, 130, 512, 60, 17]  # right-padded to 512: the longest input of these models


def electra_logits(
    folder, embedding_size=24, lengths=LENGTHS, shape=SMALL, vocab=200, std=WEIGHT_STD
):
    """(crossrank's, transformers') logits of a random ELECTRA saved to ``folder``."""
    config = transformers.ElectraConfig(
        vocab_size=vocab, max_position_embeddings=512, embedding_size=embedding_size, **shape
    )
    reference = transformers.ElectraForSequenceClassification(config).eval()
    spread_biases(spread_weights(reference, std)).save_pretrained(folder)
    ours = load_model(folder)
    ids, mask, types = padded_batch(lengths, vocab=vocab, pad_id=0)
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        return ours(ids, mask, types), expected


@pytest.mark.parametrize("layout", ["per-row", "padded"])
@pytest.mark.parametrize("embedding_size", [24, 32], ids=["projected", "hidden-wide"])
def test_electra_matches_transformers(tmp_path, embedding_size, layout, monkeypatch):
    use_layout(layout, monkeypatch)
    actual, expected = electra_logits(tmp_path, embedding_size)
    print(f"\nelectra {embedding_size} {layout}: max |diff| {(actual - expected).abs().max():.2e}")
    assert_parity(actual, expected)


def test_electra_base_shape_matches_transformers(tmp_path):
    """ms-marco-electra-base's shape, inputs up to 500 tokens (std 0.06: see the DeBERTa
    base-shape test for why not 0.2 at this width and depth)."""
    base = dict(SMALL, hidden_size=768, num_hidden_layers=12, num_attention_heads=12)
    base.update(intermediate_size=3072)
    actual, expected = electra_logits(tmp_path, 768, [500, 260, 40], base, vocab=1000, std=0.06)
    print(f"\nelectra base shape: max |diff| {(actual - expected).abs().max():.2e}")
    assert_parity(actual, expected)


def test_round_trip_and_transformers_reads_what_crossrank_saves(tmp_path):
    electra_logits(tmp_path / "original")
    model = load_model(tmp_path / "original")
    save_model(model, tmp_path / "saved")
    again = load_model(tmp_path / "saved")
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved")
    ids, mask, types = padded_batch(LENGTHS, vocab=200, pad_id=0)
    with torch.no_grad():
        logits = model(ids, mask, types)
        torch.testing.assert_close(again(ids, mask, types), logits, atol=0, rtol=0)
        expected = theirs.eval()(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        assert_parity(logits, expected)


def test_reranker_scores_like_transformers(tmp_path):
    from conftest import make_checkpoint

    folder = make_checkpoint(tmp_path, family="electra", embedding_size=24)
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
        ids, types = torch.tensor([encoding.ids]), torch.tensor([encoding.type_ids])
        with torch.no_grad():
            expected.append(float(theirs(input_ids=ids, token_type_ids=types).logits[0, 0]))
    assert_parity(torch.tensor(scores), torch.tensor(expected))


# --- injected bugs ----------------------------------------------------------------------
# Skipping the embedding projection altogether cannot reach the comparison (the narrow
# embeddings do not fit the first layer, and torch raises); its bias dropped can.


def projection_bias_dropped(monkeypatch) -> None:
    def without_bias(self, _module, _inputs, embedded):
        return F.linear(embedded, self.embeddings_project.weight)

    monkeypatch.setattr(electra_module.Electra, "project_embeddings", without_bias)


def head_activation(activation: Callable) -> Callable:
    """The classification head with another activation in place of exact GELU."""

    def inject(monkeypatch) -> None:
        def forward(self, hidden):
            x = activation(self.dense(self.dropout(hidden[:, 0])))
            return self.out_proj(self.dropout(x))

        monkeypatch.setattr(electra_module.ElectraClassificationHead, "forward", forward)

    return inject


MUTATIONS: dict[str, Callable] = {
    "projection bias dropped": projection_bias_dropped,
    "tanh head (RoBERTa's)": head_activation(torch.tanh),
    "tanh-approximate GELU head": head_activation(lambda x: F.gelu(x, approximate="tanh")),
}


@pytest.mark.parametrize("layout", ["per-row", "padded"])
@pytest.mark.parametrize("mutation", MUTATIONS)
def test_injected_bug_fails_the_parity_check(mutation, layout, tmp_path, monkeypatch):
    use_layout(layout, monkeypatch)
    MUTATIONS[mutation](monkeypatch)
    assert_parity_fails(f"electra {layout} {mutation}", *electra_logits(tmp_path))
