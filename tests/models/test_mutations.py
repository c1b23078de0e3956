"""The parity tests can fail: each bug below, injected into crossrank's model code, must
break them, and the unchanged code must pass them.

Each bug is injected in this process by replacing a function, method or class of
``crossrank.models`` (pytest's monkeypatch undoes it after the test), so the model runs the
code it would with the bug written into the source. If the model code is reorganised and a
patch target disappears, monkeypatch raises; if a patch no longer reaches the code that runs,
the parity check passes under it and this module fails: either way it says so.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from test_parity import assert_parity, bert_logits, xlm_roberta_logits

from crossrank.models import attention as attention_module
from crossrank.models import bert as bert_module


def tanh_gelu(monkeypatch) -> None:
    """The tanh approximation where checkpoints say exact (erf) GELU. The whole feed-forward
    input block is replaced, so the bug reaches every path it has (fused or not)."""

    def tanh_forward(self, x):
        return F.gelu(self.dense(x), approximate="tanh")

    monkeypatch.setattr(bert_module.Intermediate, "forward", tanh_forward)


def token_types_ignored(monkeypatch) -> None:
    """Every token embedded as segment A."""
    forward = bert_module.BertEmbeddings.forward

    def without_types(self, input_ids, token_type_ids, attention_mask):
        return forward(self, input_ids, torch.zeros_like(token_type_ids), attention_mask)

    monkeypatch.setattr(bert_module.BertEmbeddings, "forward", without_types)


def no_padding_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(mask.shape[0], 1, 1, mask.shape[1], dtype=dtype, device=mask.device)


def zero_padding_bias(monkeypatch) -> None:
    """The padded layout's additive mask left at zero: real tokens attend to padding."""
    monkeypatch.setattr(bert_module, "padding_bias", no_padding_bias)


def attention_mask_ignored(monkeypatch) -> None:
    """The mask dropped altogether: every position is a real token in both layouts."""
    layout = bert_module.TokenLayout
    monkeypatch.setattr(bert_module, "padding_bias", no_padding_bias)
    monkeypatch.setattr(
        bert_module, "TokenLayout", lambda mask, *a, **k: layout(torch.ones_like(mask), *a, **k)
    )


MUTATIONS: dict[str, Callable] = {
    "tanh GELU": tanh_gelu,
    "token types ignored": token_types_ignored,
    "zero padding bias": zero_padding_bias,
    "attention mask ignored": attention_mask_ignored,
}
MODELS = {"bert": bert_logits, "xlm-roberta": xlm_roberta_logits}
CASES = [
    (model, mutation, layout)
    for model in MODELS
    for mutation in MUTATIONS
    for layout in ("per-row", "padded")
    # XLM-RoBERTa has one token type; the per-row layout uses no padding bias at all
    if not (model == "xlm-roberta" and mutation == "token types ignored")
    and not (layout == "per-row" and mutation == "zero padding bias")
]


def assert_parity_fails(label: str, actual: torch.Tensor, expected: torch.Tensor) -> None:
    """The parity check must reject logits computed with an injected bug."""
    print(f"\n{label}: max |diff| {(actual - expected).abs().max():.2e}")
    with pytest.raises(AssertionError, match="Tensor-likes are not close"):
        assert_parity(actual, expected)


def use_layout(layout: str, monkeypatch) -> None:
    if layout == "padded":  # the CUDA layout, here on the CPU
        monkeypatch.setattr(attention_module, "PER_ROW_DEVICES", ())


@pytest.mark.parametrize("layout", ["per-row", "padded"])
@pytest.mark.parametrize("model", MODELS)
def test_unchanged_code_passes(model, layout, tmp_path, monkeypatch):
    use_layout(layout, monkeypatch)
    assert_parity(*MODELS[model](tmp_path))


@pytest.mark.parametrize(("model", "mutation", "layout"), CASES)
def test_injected_bug_fails_the_parity_check(model, mutation, layout, tmp_path, monkeypatch):
    use_layout(layout, monkeypatch)
    MUTATIONS[mutation](monkeypatch)
    assert_parity_fails(f"{model} {layout} {mutation}", *MODELS[model](tmp_path))
