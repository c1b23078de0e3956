"""What sentence-transformers' CrossEncoder reads from a checkpoint besides its weights.

Checkpoints saved by sentence-transformers say which activation turns the logit into the
score ``CrossEncoder.predict`` returns, and how many tokens it reads; crossrank honours
both so that a folder scores the same in either. The activation is stored in
``config_sentence_transformers.json`` (sentence-transformers 5), under ``config.json``'s
``sentence_transformers`` key (4) or as its ``sbert_ce_default_activation_function`` (2
and 3); without one a single-logit model gets a sigmoid, as there. The length comes from
``sentence_bert_config.json``'s ``max_seq_length``, else the tokenizer's
``model_max_length``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def identity(x: float) -> float:
    return float(x)


ACTIVATIONS: dict[str, Callable[[float], float]] = {
    "sigmoid": sigmoid,
    "identity": identity,
    "tanh": math.tanh,
}
# sentence-transformers' dotted class paths -> crossrank's names
ACTIVATION_PATHS = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
}
# tokenizer_config.json's "no limit" value (transformers' VERY_LARGE_INTEGER) and the like
UNSET_LENGTH = 10**9


@dataclass(frozen=True)
class Conventions:
    activation: str  # a key of ACTIVATIONS
    activation_source: str  # where it was read, for the load log
    max_length: int | None  # None: the model's positions


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def activation_path(folder: Path) -> tuple[str | None, str]:
    """The dotted class path of the stored activation and the file that held it."""
    stored = read_json(folder / "config_sentence_transformers.json").get("activation_fn")
    if stored:
        return stored, "config_sentence_transformers.json"
    config = read_json(folder / "config.json")
    stored = (config.get("sentence_transformers") or {}).get("activation_fn")
    if stored:
        return stored, "config.json sentence_transformers"
    stored = config.get("sbert_ce_default_activation_function")
    if stored:
        return stored, "config.json sbert_ce_default_activation_function"
    return None, "default"


def read_conventions(folder: Path) -> Conventions:
    path, source = activation_path(folder)
    activation = "sigmoid" if path is None else ACTIVATION_PATHS.get(path)
    if activation is None:
        log.warning("%s: activation %s is not one crossrank knows; using sigmoid", folder, path)
        activation, source = "sigmoid", "default"
    length = read_json(folder / "sentence_bert_config.json").get("max_seq_length")
    if length is None:
        length = read_json(folder / "tokenizer_config.json").get("model_max_length")
    if not isinstance(length, int) or length >= UNSET_LENGTH or length < 1:
        length = None
    return Conventions(activation, source, length)
