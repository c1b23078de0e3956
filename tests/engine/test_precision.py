"""The default number format rule (engine/precision.py), with the CPU probe mocked both ways."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from crossrank import Reranker
from crossrank.engine import precision as precision_module
from crossrank.engine.precision import (
    BF16_TOLERANCE,
    DTYPE_ENV,
    PROBE_PAIRS,
    choose_precision,
    native_bf16_instructions,
    probe_scores,
)

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def no_dtype_environment(monkeypatch):
    monkeypatch.delenv(DTYPE_ENV, raising=False)  # tests/conftest.py pins it for other tests


def cpu_with(monkeypatch, amx: bool = False, avx512_bf16: bool = False) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)


class Probe:
    """Scores for the probe pairs: ``change`` added in bf16; records the dtypes asked for."""

    def __init__(self, change: float = 0.0):
        self.change = change
        self.calls: list[torch.dtype] = []

    def __call__(self, dtype: torch.dtype) -> torch.Tensor:
        self.calls.append(dtype)
        scores = torch.linspace(0.05, 0.95, len(PROBE_PAIRS))
        return scores + self.change if dtype == torch.bfloat16 else scores


def test_without_native_bf16_the_default_is_fp32_and_nothing_is_probed(monkeypatch):
    cpu_with(monkeypatch)
    probe = Probe()
    chosen = choose_precision(None, CPU, probe)
    assert chosen.dtype == torch.float32
    assert "neither AVX512-BF16 nor AMX" in chosen.reason
    assert probe.calls == []


@pytest.mark.parametrize(("amx", "name"), [(False, "AVX512-BF16"), (True, "AMX")])
def test_with_native_bf16_and_a_small_change_the_default_is_bf16(monkeypatch, amx, name):
    cpu_with(monkeypatch, amx=amx, avx512_bf16=True)
    probe = Probe(change=BF16_TOLERANCE / 2)
    chosen = choose_precision(None, CPU, probe)
    assert chosen.dtype == torch.bfloat16
    assert f"CPU has {name}" in chosen.reason
    assert f"max |Δscore| {BF16_TOLERANCE / 2:.4f}" in chosen.reason
    assert str(chosen).startswith("dtype bfloat16: ")
    assert sorted(map(str, probe.calls)) == ["torch.bfloat16", "torch.float32"]


def test_with_native_bf16_and_a_large_change_the_default_stays_fp32(monkeypatch):
    cpu_with(monkeypatch, avx512_bf16=True)
    chosen = choose_precision(None, CPU, Probe(change=3 * BF16_TOLERANCE))
    assert chosen.dtype == torch.float32
    assert "this model needs fp32" in chosen.reason


def test_a_requested_dtype_or_the_environment_wins_without_probing(monkeypatch):
    cpu_with(monkeypatch, avx512_bf16=True)
    probe = Probe()
    assert choose_precision("int8", CPU, probe).dtype == "int8"
    assert choose_precision(torch.float32, CPU, probe).reason == "requested"
    monkeypatch.setenv(DTYPE_ENV, "float32")
    chosen = choose_precision(None, CPU, probe)
    assert (chosen.dtype, chosen.reason) == (torch.float32, f"set by {DTYPE_ENV}")
    monkeypatch.setenv(DTYPE_ENV, "fp8")
    with pytest.raises(ValueError, match=f"{DTYPE_ENV}='fp8': unknown dtype"):
        choose_precision(None, CPU, probe)
    assert probe.calls == []


def test_cuda_keeps_its_autocast_default():
    chosen = choose_precision(None, torch.device("cuda"), Probe())
    assert chosen.dtype is None and "CUDA" in chosen.reason


def test_cpu_flags_are_the_fallback_when_torch_lacks_its_checks(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert native_bf16_instructions() == "AVX512-BF16"
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: {"avx512f", "amx_bf16"})
    assert native_bf16_instructions() == "AMX"
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: {"avx512f", "avx512_vnni"})
    assert native_bf16_instructions() is None


def test_probe_scores_are_the_scores_of_the_model_in_that_dtype(tiny_checkpoint):
    fp32 = Reranker(tiny_checkpoint, dtype="float32")
    bf16 = Reranker(tiny_checkpoint, dtype="bfloat16")

    def scores(reranker):
        return [reranker.score(query, [document])[0] for query, document in PROBE_PAIRS]

    probed32 = probe_scores(fp32.model, fp32.encoder, torch.float32)
    probed16 = probe_scores(fp32.model, fp32.encoder, torch.bfloat16)
    np.testing.assert_allclose(probed32.numpy(), scores(fp32), atol=1e-6)
    np.testing.assert_allclose(probed16.numpy(), scores(bf16), atol=1e-6)
    assert (probed16 - probed32).abs().max() > 0  # a real bf16 forward, not the fp32 one
    assert fp32.model.embeddings.word_embeddings.weight.dtype == torch.float32  # untouched


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_reranker_follows_the_rule_and_logs_why(
    tiny_checkpoint, monkeypatch, caplog, native, expected
):
    cpu_with(monkeypatch, avx512_bf16=native)
    # the tiny random model's bf16 scores move by more than the default tolerance
    monkeypatch.setattr(precision_module, "BF16_TOLERANCE", 1.0)
    with caplog.at_level(logging.INFO, logger="crossrank"):
        reranker = Reranker(tiny_checkpoint, device="cpu")
    assert reranker.precision.dtype == expected
    assert reranker.model.classifier.weight.dtype == expected
    assert f"dtype {str(expected).removeprefix('torch.')}: " in caplog.text
    assert len(reranker.score("a query", ["a document", "another"])) == 2
