"""A folder saved by sentence-transformers' CrossEncoder scores in crossrank as
``CrossEncoder.predict`` scores it: the activation and the length it stores are honoured."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sentence_transformers import CrossEncoder

from crossrank import Reranker
from crossrank.engine.conventions import read_conventions

QUERY = "how do cross-encoders rank documents"
DOCUMENTS = ["A cross-encoder reads both texts.", "Bananas are yellow. " * 60, "short"]


def saved_cross_encoder(source, folder, **options):
    model = CrossEncoder(str(source), device="cpu", **options)
    model.save(str(folder))
    return CrossEncoder(str(folder), device="cpu")


@pytest.mark.parametrize(
    ("activation", "name"),
    [(torch.nn.Identity(), "identity"), (torch.nn.Sigmoid(), "sigmoid"), (torch.nn.Tanh(), "tanh")],
)
def test_stored_activation_gives_predicts_scores(tiny_checkpoint, tmp_path, activation, name):
    theirs = saved_cross_encoder(tiny_checkpoint, tmp_path, activation_fn=activation)
    ours = Reranker(tmp_path, long_documents="truncate")
    assert ours.activation == name
    expected = theirs.predict([(QUERY, d) for d in DOCUMENTS])
    np.testing.assert_allclose(ours.score(QUERY, DOCUMENTS), expected, atol=1e-5, rtol=0)


def test_stored_max_length_is_the_default(tiny_checkpoint, tmp_path):
    theirs = saved_cross_encoder(tiny_checkpoint, tmp_path, max_length=48)
    ours = Reranker(tmp_path, long_documents="truncate")
    assert ours.max_length == 48
    expected = theirs.predict([(QUERY, d) for d in DOCUMENTS])  # the long one cut to 48
    np.testing.assert_allclose(ours.score(QUERY, DOCUMENTS), expected, atol=1e-5, rtol=0)


def test_older_config_keys_and_the_override(tiny_checkpoint, tmp_path):
    """sentence-transformers 2-3 kept the activation in config.json; an explicit
    ``activation`` wins over any stored one."""
    saved_cross_encoder(tiny_checkpoint, tmp_path)
    (tmp_path / "config_sentence_transformers.json").unlink(missing_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("sentence_transformers", None)
    config["sbert_ce_default_activation_function"] = "torch.nn.modules.linear.Identity"
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert read_conventions(tmp_path).activation == "identity"
    raw = Reranker(tmp_path).score(QUERY, DOCUMENTS[:1], raw=True)
    assert Reranker(tmp_path).score(QUERY, DOCUMENTS[:1]) == raw
    assert Reranker(tmp_path, activation="sigmoid").score(QUERY, DOCUMENTS[:1])[0] == (
        pytest.approx(1 / (1 + np.exp(-raw[0])))
    )
    with pytest.raises(ValueError, match="activation must be one of"):
        Reranker(tmp_path, activation="softmax")


def test_a_plain_checkpoint_keeps_sigmoid_and_its_positions(tiny_checkpoint):
    conventions = read_conventions(tiny_checkpoint)
    assert conventions.activation == "sigmoid" and conventions.max_length is None
