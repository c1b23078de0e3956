"""Qwen3 decoder rerankers against transformers' Qwen3ForCausalLM (P("yes") over the
templated text) and Qwen3ForSequenceClassification, and bugs the comparison must catch."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import transformers
from test_mutations import assert_parity_fails, use_layout
from test_parity import WEIGHT_STD, assert_parity, padded_batch
from tokenizers import Tokenizer

from conftest import QWEN3_SMALL as SMALL
from conftest import make_qwen3_checkpoint
from crossrank import Reranker
from crossrank.models import load_model, save_model
from crossrank.models import qwen3 as qwen3_module
from crossrank.models.qwen3 import PROMPT

LENGTHS = [5, 130, 1100, 60, 17]


def qwen3_logits(folder, shape=SMALL, lengths=LENGTHS, std=WEIGHT_STD):
    """(crossrank's yes - no logits, transformers' from its lm_head) on a right-padded batch."""
    reference, tokenizer = make_qwen3_checkpoint(folder, shape, std)
    ours = load_model(folder)
    ids, mask, types = padded_batch(lengths, vocab=reference.config.vocab_size, pad_id=0)
    yes, no = tokenizer.token_to_id("yes"), tokenizer.token_to_id("no")
    with torch.no_grad():
        logits = reference(input_ids=ids, attention_mask=mask).logits
        last = logits[torch.arange(len(lengths)), torch.tensor(lengths) - 1]
        return ours(ids, mask, types), (last[:, yes] - last[:, no])[:, None]


@pytest.mark.parametrize("layout", ["per-row", "padded"])
def test_yes_minus_no_matches_the_causal_lm(tmp_path, layout, monkeypatch):
    use_layout(layout, monkeypatch)
    actual, expected = qwen3_logits(tmp_path)
    print(f"\nqwen3 {layout}: max |diff| {(actual - expected).abs().max():.2e}")
    assert_parity(actual, expected)


def test_untied_head_and_bases_shape(tmp_path):
    """Qwen3-Reranker-0.6B's own shape (28 layers, 16/8 heads of 128, hidden 1024), an
    untied head; std 0.03, for the reason given in the ModernBERT base-shape test."""
    base = dict(SMALL, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28)
    base.update(num_attention_heads=16, num_key_value_heads=8, head_dim=128)
    base.update(rope_theta=1_000_000.0, tie_word_embeddings=False)
    actual, expected = qwen3_logits(tmp_path, base, [700, 300, 40], std=0.03)
    print(f"\nqwen3 base shape: max |diff| {(actual - expected).abs().max():.2e}")
    assert_parity(actual, expected)


def reference_p_yes(folder, query, document, instruction=None) -> float:
    """The model card's recipe: the whole prompt as text, tokenised, P("yes") at the end."""
    model = transformers.Qwen3ForCausalLM.from_pretrained(folder).eval()
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    text = (
        PROMPT.text_before_query(instruction)
        + f" {query}{PROMPT.before_document} {document}{PROMPT.after_document}"
    )
    ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False).ids])
    with torch.no_grad():
        last = model(input_ids=ids).logits[0, -1]
    pair = torch.stack([last[tokenizer.token_to_id("no")], last[tokenizer.token_to_id("yes")]])
    return float(torch.softmax(pair.double(), 0)[1])


def test_reranker_gives_the_model_cards_p_yes(tmp_path):
    make_qwen3_checkpoint(tmp_path)
    reranker = Reranker(tmp_path, dtype="float32")
    query = "what do cross-encoders read?"
    documents = ["A cross-encoder reads the query and the document together.", "yes " * 200, "no"]
    expected = [reference_p_yes(tmp_path, query, d) for d in documents]
    assert max(expected) - min(expected) > 0.05
    torch.testing.assert_close(
        torch.tensor(reranker.score(query, documents), dtype=torch.float64),
        torch.tensor(expected, dtype=torch.float64),
        atol=1e-5,
        rtol=0,
    )
    instruction = "Judge whether the passage is about bananas"
    instructed = reranker.score(query, documents[:1], instruction=instruction)
    assert instructed[0] == pytest.approx(
        reference_p_yes(tmp_path, query, documents[0], instruction), abs=1e-5
    )
    assert abs(instructed[0] - expected[0]) > 1e-4  # the instruction reached the prompt


def test_sequence_classification_conversion_loads_and_round_trips(tmp_path):
    """The seq-cls conversion (score = W_yes - W_no) scores like the causal LM, and what
    crossrank saves is such a conversion, read back by transformers."""
    qwen3_logits(tmp_path / "lm")
    model = load_model(tmp_path / "lm")
    save_model(model, tmp_path / "seq-cls")
    config = json.loads((tmp_path / "seq-cls" / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForSequenceClassification"]
    again = load_model(tmp_path / "seq-cls")
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "seq-cls")
    ids, mask, types = padded_batch([5, 40], vocab=300, pad_id=0)
    with torch.no_grad():
        ours = model(ids, mask, types)
        torch.testing.assert_close(again(ids, mask, types), ours, atol=0, rtol=0)
        for row, n in enumerate([5, 40]):  # one row at a time: no padding to find
            single = theirs.eval()(input_ids=ids[row : row + 1, :n]).logits
            torch.testing.assert_close(single, ours[row : row + 1], atol=1e-5, rtol=0)


# --- injected bugs ----------------------------------------------------------------------


def yes_and_no_swapped(monkeypatch) -> None:
    answer = qwen3_module.answer_tokens
    monkeypatch.setattr(qwen3_module, "answer_tokens", lambda path: answer(path)[::-1])


def first_token_read(monkeypatch) -> None:
    """The logit read at each row's first token, as an encoder's [CLS]."""
    forward = qwen3_module.Qwen3.forward

    def at_first(self, input_ids, attention_mask, token_type_ids=None):
        return forward(self, input_ids[:, :1], attention_mask[:, :1])

    monkeypatch.setattr(qwen3_module.Qwen3, "forward", at_first)


def no_query_key_norm(monkeypatch) -> None:
    """Qwen2's attention: no RMSNorm on the heads' queries and keys."""
    init = qwen3_module.Qwen3Attention.__init__

    def without(self, config):
        init(self, config)
        self.q_norm = self.k_norm = torch.nn.Identity()

    monkeypatch.setattr(qwen3_module.Qwen3Attention, "__init__", without)


def bidirectional(monkeypatch) -> None:
    """Attention without the causal mask: tokens read what follows them."""

    def no_causal(q, k, v, attn_mask=None, is_causal=False):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)

    functions = SimpleNamespace(silu=F.silu, scaled_dot_product_attention=no_causal)
    monkeypatch.setattr(qwen3_module, "F", functions)  # transformers' F stays as it is


MUTATIONS: dict[str, Callable] = {
    "yes and no swapped": yes_and_no_swapped,
    "first token read": first_token_read,
    "no query/key norm": no_query_key_norm,
    "bidirectional attention": bidirectional,
}


@pytest.mark.parametrize("layout", ["per-row", "padded"])
@pytest.mark.parametrize("mutation", MUTATIONS)
def test_injected_bug_fails_the_parity_check(mutation, layout, tmp_path, monkeypatch):
    use_layout(layout, monkeypatch)
    MUTATIONS[mutation](monkeypatch)
    assert_parity_fails(f"qwen3 {layout} {mutation}", *qwen3_logits(tmp_path))


def test_sharded_checkpoint_loads(tmp_path):
    """Qwen3-Reranker-4B and -8B come as model-0000N-of-0000M.safetensors shards."""
    reference, tokenizer = make_qwen3_checkpoint(tmp_path / "whole")
    reference.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    tokenizer.save(str(tmp_path / "sharded" / "tokenizer.json"))
    assert len(list((tmp_path / "sharded").glob("model-*-of-*.safetensors"))) > 1
    ids, mask, types = padded_batch([5, 40], vocab=300, pad_id=0)
    whole, sharded = load_model(tmp_path / "whole"), load_model(tmp_path / "sharded")
    with torch.no_grad():
        torch.testing.assert_close(sharded(ids, mask, types), whole(ids, mask, types))
