"""An architecture without crossrank code (DistilBERT) loads through transformers with the
extra installed, and fails in one clear line without it."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
import transformers
from test_parity import assert_parity, padded_batch, spread_weights

from crossrank import Reranker
from crossrank.models import CheckpointError, fallback, load_model


@pytest.fixture
def distilbert(tmp_path):
    """A random DistilBertForSequenceClassification with the all-MiniLM-L6-v2 tokenizer."""
    from conftest import all_minilm_l6_v2_path

    config = transformers.DistilBertConfig(
        vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=48, num_labels=1
    )
    spread_weights(transformers.DistilBertForSequenceClassification(config)).save_pretrained(
        tmp_path
    )
    shutil.copy(all_minilm_l6_v2_path() / "tokenizer.json", tmp_path)
    return tmp_path


def test_loads_through_transformers_and_scores_like_it(distilbert, caplog):
    with caplog.at_level(logging.WARNING, logger="crossrank"):
        model = load_model(distilbert)
    assert "DistilBertForSequenceClassification has no crossrank code" in caplog.text
    assert "generic, slower path" in caplog.text
    assert model.config.max_tokens == 512 and model.config.pad_token_id == 0
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(distilbert).eval()
    ids, mask, types = padded_batch([5, 130, 60], vocab=30522, pad_id=0)
    with torch.no_grad():  # token types are dropped: DistilBERT's forward refuses them
        assert_parity(model(ids, mask, types), theirs(input_ids=ids, attention_mask=mask).logits)


def test_reranker_ranks_with_the_fallback(distilbert):
    reranker = Reranker(distilbert, dtype="float32")
    documents = ["A cross-encoder reads both texts.", "Bananas are yellow. " * 40, "short"]
    results = reranker.rerank("how do cross-encoders rank documents", documents, top_n=2)
    assert len(results) == 2 and all(0 <= r.relevance_score <= 1 for r in results)


def test_without_the_extra_one_line_names_it_and_the_families(distilbert, monkeypatch):
    monkeypatch.setattr(fallback, "transformers_installed", lambda: False)
    with pytest.raises(CheckpointError) as error:
        load_model(distilbert)
    message = str(error.value)
    assert "\n" not in message
    assert "DistilBertForSequenceClassification" in message and "'distilbert'" in message
    assert "modernbert" in message and "deberta" in message
    assert "pip install 'crossrank[transformers]'" in message


def test_remote_code_only_when_asked(distilbert):
    """A config with auto_map (code in the repository) is refused unless trusted."""
    config = json.loads((distilbert / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling.Custom"}
    (distilbert / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="trust_remote_code=True"):
        load_model(distilbert)


def test_cli_ranks_with_the_fallback_and_refuses_remote_code_in_one_line(distilbert, tmp_path):
    from test_cli import crossrank

    documents = tmp_path / "documents.txt"
    documents.write_text("a cross-encoder reads both texts\nbananas are yellow\n")
    args = ("rerank", "-m", str(distilbert), "-q", "cross-encoders", str(documents))
    result = crossrank(*args, "--dtype", "float32")
    assert result.returncode == 0, result.stderr
    assert sorted(r["index"] for r in json.loads(result.stdout)) == [0, 1]
    config = json.loads((distilbert / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling.Custom"}
    (distilbert / "config.json").write_text(json.dumps(config))
    refused = crossrank(*args)
    assert refused.returncode != 0 and "--trust-remote-code" in refused.stderr
    assert "Traceback" not in refused.stderr
