"""Any other cross-encoder, through ``transformers``' AutoModelForSequenceClassification.

The slower generic path for architectures crossrank has no code of its own for: the
model runs as ``transformers`` wrote it (padded batches, its own attention), behind the
same ``forward(input_ids, attention_mask, token_type_ids) -> logits`` as crossrank's
families, so everything that takes a model takes this one too. It needs the optional
extra (``pip install 'crossrank[transformers]'``) and never runs a repository's own code
unless asked to (``trust_remote_code=True``).
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

EXTRA = "pip install 'crossrank[transformers]'"
# Models without a position table (relative or rotary positions) still have a length they
# were trained for; this stands in when the config names none.
DEFAULT_MAX_TOKENS = 512


@dataclass
class FallbackConfig:
    """What crossrank reads from a config it has no dataclass for."""

    architecture: str
    max_tokens: int
    pad_token_id: int
    num_labels: int


class TransformersCrossEncoder(nn.Module):
    """A ``transformers`` sequence classifier behind crossrank's model interface."""

    def __init__(self, model: nn.Module, config: FallbackConfig):
        super().__init__()
        self.model = model
        self.config = config
        accepted = inspect.signature(model.forward).parameters
        # DistilBERT and others have no token types and refuse the argument
        self.takes_token_types = "token_type_ids" in accepted

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.takes_token_types and token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        return self.model(**inputs).logits


def missing_extra_message(config: dict[str, Any], supported: list[str]) -> str:
    return (
        f"{architecture_of(config)} (model_type {config.get('model_type')!r}) has no "
        f"crossrank code (crossrank's own: {', '.join(supported)}); {EXTRA} to load it "
        "through transformers"
    )


def architecture_of(config: dict[str, Any]) -> str:
    return (config.get("architectures") or [f"model_type {config.get('model_type')!r}"])[0]


def transformers_installed() -> bool:
    return importlib.util.find_spec("transformers") is not None


def load_fallback(path: Path, config: dict[str, Any], trust_remote_code: bool) -> nn.Module:
    """The checkpoint in ``path`` as ``transformers`` loads it (ValueError for remote code
    not allowed, or for what transformers cannot load)."""
    import transformers

    if "auto_map" in config and not trust_remote_code:
        raise ValueError(
            f"{architecture_of(config)} in {path} needs the code in its repository "
            "(config.json has auto_map); pass trust_remote_code=True (CLI: "
            "--trust-remote-code) if you trust that code"
        )
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        path, trust_remote_code=trust_remote_code
    )
    hf_config = model.config
    ours = FallbackConfig(
        architecture=architecture_of(config),
        max_tokens=getattr(hf_config, "max_position_embeddings", None) or DEFAULT_MAX_TOKENS,
        pad_token_id=hf_config.pad_token_id or 0,
        num_labels=hf_config.num_labels,
    )
    return TransformersCrossEncoder(model.eval(), ours)
