"""`crossrank train --base` from a checkpoint of each encoder family, written by
``transformers`` itself: a few steps lower the loss, and the folder it saves is read back
by ``transformers`` with the same logits as crossrank's."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import transformers
from test_training import config, toy_data  # noqa: F401  (the fixture)

from crossrank.engine.batching import collate
from crossrank.engine.hub import all_minilm_l6_v2_path
from crossrank.models import load_model
from crossrank.training.train import train

SMALL = dict(
    vocab_size=30522,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    num_labels=1,
    pad_token_id=0,
)
# family -> (transformers config, the model class that writes the base checkpoint)
BASES = {
    "deberta-v2": (
        lambda: transformers.DebertaV2Config(
            **SMALL, max_position_embeddings=64, position_buckets=16, relative_attention=True,
            pos_att_type=["p2c", "c2p"], position_biased_input=False, norm_rel_ebd="layer_norm",
            share_att_key=True, type_vocab_size=0,
        ),
        transformers.DebertaV2ForSequenceClassification,
    ),
    "electra": (
        lambda: transformers.ElectraConfig(**SMALL, embedding_size=24, max_position_embeddings=64),
        transformers.ElectraForSequenceClassification,
    ),
    "modernbert": (
        lambda: transformers.ModernBertConfig(
            **SMALL, local_attention=16, global_attn_every_n_layers=2,
            max_position_embeddings=64, bos_token_id=101, eos_token_id=102, cls_token_id=101,
            sep_token_id=102,
        ),
        transformers.ModernBertForSequenceClassification,
    ),
}  # fmt: skip


@pytest.mark.parametrize("family", list(BASES))
def test_train_from_each_family_saves_what_transformers_reads(family, toy_data, tmp_path):  # noqa: F811
    make_config, model_class = BASES[family]
    torch.manual_seed(0)
    base = tmp_path / "base"
    model_class(make_config()).save_pretrained(base)
    shutil.copyfile(all_minilm_l6_v2_path() / "tokenizer.json", base / "tokenizer.json")

    out = tmp_path / "run"
    train(config(base, toy_data, out, steps=30, lr=3e-3, save_every=100))
    log = [json.loads(line) for line in (out / "training_log.jsonl").open()]
    first = sum(r["loss"] for r in log[:5]) / 5
    last = sum(r["loss"] for r in log[-5:]) / 5
    assert last < first, (first, last)

    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    ours = load_model(out)
    assert type(theirs) is model_class
    from crossrank import Reranker

    encoder = Reranker.from_pretrained(out, dtype="float32").encoder
    features = encoder.encode("what about apple", ["an apple a day", "a river runs", "chess"])
    inputs = collate(features, pad_id=0, device=torch.device("cpu"))
    with torch.no_grad():
        expected = theirs(**inputs).logits[:, 0]
        got = ours(**inputs)[:, 0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_a_decoder_reranker_is_refused_in_one_line(tmp_path):
    from conftest import make_qwen3_checkpoint
    from crossrank.models import CheckpointError
    from crossrank.training.train import init_model

    make_qwen3_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=r"fine-tunes .*modernbert.* checkpoints, not qwen3"):
        init_model(tmp_path)
