"""Shared fixtures: random small checkpoints in Hugging Face layout, made on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from tokenizers.processors import RobertaProcessing

from crossrank.engine.hub import all_minilm_l6_v2_path
from crossrank.models import FAMILIES, save_model

# The public BEIR datasets (../shared/data beside the repository); CROSSRANK_TEST_DATA points
# elsewhere. Tests that need them skip when the folder is missing, except in CI (CI=true), where
# a missing folder fails the run: a CI run must not pass by skipping its data tests.
DATA = Path(
    os.environ.get("CROSSRANK_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
# The default number format depends on the CPU (bf16 where it has native bf16 instructions,
# engine/precision.py); tests compare scores to fp32 references, so they run in fp32 on any
# CPU (subprocesses too). tests/engine/test_precision.py tests the default rule itself.
os.environ.setdefault("CROSSRANK_DTYPE", "float32")


def missing_data_message() -> str:
    return (
        f"the shared datasets folder {DATA} is missing (set CROSSRANK_TEST_DATA to its "
        "location); CI=true makes this an error instead of a skip"
    )


def pytest_collection_modifyitems(session, config, items) -> None:
    """In CI, stop before running anything when collected tests need a missing data folder."""
    if IN_CI and not DATA.is_dir() and any("data_dir" in item.fixturenames for item in items):
        pytest.exit(missing_data_message(), returncode=pytest.ExitCode.TESTS_FAILED)


TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def make_checkpoint(folder: Path, family: str = "bert", seed: int = 0, **overrides) -> Path:
    """A randomly initialised cross-encoder with the all-MiniLM-L6-v2 WordPiece tokenizer."""
    config_cls, model_cls = FAMILIES[family].config, FAMILIES[family].model
    if family == "roberta":  # the WordPiece vocabulary pads with id 0
        overrides = {"pad_token_id": 0, **overrides}
    config = config_cls(**{**TINY, "vocab_size": 30522, **overrides})
    torch.manual_seed(seed)
    model = model_cls(config)
    with torch.no_grad():  # a head large enough that scores spread out
        for p in model.parameters():
            p.normal_(0, 0.2) if p.dim() > 1 else None
    save_model(model, folder)
    tokenizer = Tokenizer.from_file(str(all_minilm_l6_v2_path() / "tokenizer.json"))
    if family == "roberta":  # RoBERTa's pair template: <s> A </s></s> B </s>, one token type
        tokenizer.post_processor = RobertaProcessing(("[SEP]", 102), ("[CLS]", 101))
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


# Qwen3-Reranker-0.6B's layout (grouped queries: 2 query heads per key/value head, a head
# dimension wider than hidden / heads) at a small width
QWEN3_SMALL = dict(
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=2048,
    rope_theta=10_000.0,
    tie_word_embeddings=True,
)


def byte_level_tokenizer() -> Tokenizer:
    """A byte-level BPE with Qwen's pre-tokenizer, its chat special tokens, "yes" and "no"
    (no merges: each byte is a token, except the words and specials added)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocabulary = {c: i for i, c in enumerate(sorted(alphabet))}
    for word in ("yes", "no"):
        vocabulary[word] = len(vocabulary)
    tokenizer = Tokenizer(models.BPE(vocab=vocabulary, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return tokenizer


def make_qwen3_checkpoint(folder: Path, shape=None, std: float = 0.2, vocab: int = 300):
    """A random Qwen3ForCausalLM (a Qwen3-Reranker's layout) with the tokenizer above;
    (the transformers model, the tokenizer)."""
    import transformers

    shape = shape or QWEN3_SMALL
    tokenizer = byte_level_tokenizer()
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    vocab = max(vocab, tokenizer.get_vocab_size())
    config = transformers.Qwen3Config(vocab_size=vocab, **shape)
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(config).eval()
    with torch.no_grad():  # wider than the default init, so that a wrong operation shows
        for p in model.parameters():
            p.normal_(0, std) if p.dim() > 1 else None
    model.save_pretrained(folder)
    return model, tokenizer


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny random BERT cross-encoder (512 positions)."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_jina_checkpoint(tmp_path_factory) -> Path:
    """A tiny random JinaBERT cross-encoder (8192 positions, ALiBi, GEGLU)."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny-jina"), family="jinabert")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        if IN_CI:
            pytest.fail(missing_data_message(), pytrace=False)
        pytest.skip(f"shared datasets not found at {DATA}")
    return DATA
