"""Model families and checkpoint loading.

Each family lives in its own file (``bert.py``, ``jinabert.py``, ``roberta.py``,
``deberta.py``, ``electra.py``, ``modernbert.py``, ``qwen3.py``); this module picks the
family from a checkpoint's ``config.json`` and loads/saves weights in the Hugging Face
layout. Other architectures go through transformers (``fallback.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from crossrank.models import fallback
from crossrank.models.bert import Bert, BertConfig
from crossrank.models.deberta import DebertaV2, DebertaV2Config
from crossrank.models.electra import Electra, ElectraConfig
from crossrank.models.fallback import architecture_of
from crossrank.models.jinabert import JinaBert, JinaBertConfig
from crossrank.models.modernbert import ModernBert, ModernBertConfig
from crossrank.models.qwen3 import Qwen3, Qwen3Config, yes_minus_no
from crossrank.models.roberta import Roberta, RobertaConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    """How one architecture family is built, named and laid out on disk."""

    config: type[Any]  # a dataclass with ``from_dict``, ``max_tokens``, ``pad_token_id``
    model: type[nn.Module]  # forward(input_ids, attention_mask, token_type_ids) -> logits
    prefix: str  # the attribute transformers keeps the encoder under ("bert.", "model.")
    model_type: str  # written to config.json by save_model
    architecture: str
    head_keys: tuple[str, ...] = ("pooler.", "classifier.")  # what a bare encoder lacks
    top_level: tuple[str, ...] = ("classifier.",)  # saved without the prefix
    # (state, config, folder) -> state, for checkpoints whose head takes reshaping
    convert: Callable[[dict, Any, Path], dict] | None = None
    trainable: bool = True  # by crossrank train (the encoders: no prompt in its inputs)


FAMILIES: dict[str, Family] = {
    "bert": Family(BertConfig, Bert, "bert", "bert", "BertForSequenceClassification"),
    "jinabert": Family(
        JinaBertConfig, JinaBert, "bert", "bert", "JinaBertForSequenceClassification"
    ),
    "roberta": Family(
        RobertaConfig, Roberta, "roberta", "xlm-roberta", "XLMRobertaForSequenceClassification"
    ),
    # DeBERTa keeps its pooler at the top level too (pooler.dense)
    "deberta": Family(
        DebertaV2Config,
        DebertaV2,
        "deberta",
        "deberta-v2",
        "DebertaV2ForSequenceClassification",
        head_keys=("pooler.", "classifier."),
        top_level=("pooler.", "classifier."),
    ),
    "electra": Family(
        ElectraConfig,
        Electra,
        "electra",
        "electra",
        "ElectraForSequenceClassification",
        head_keys=("classifier.",),
        top_level=("classifier.",),
    ),
    # ModernBERT's head (dense, act, norm) sits beside the classifier, outside model.
    "modernbert": Family(
        ModernBertConfig,
        ModernBert,
        "model",
        "modernbert",
        "ModernBertForSequenceClassification",
        head_keys=("head.", "classifier."),
        top_level=("head.", "classifier."),
    ),
    # saved as the sequence-classification conversion: the decoder and a one-row score
    "qwen3": Family(
        Qwen3Config,
        Qwen3,
        "model",
        "qwen3",
        "Qwen3ForSequenceClassification",
        head_keys=("score.",),
        top_level=("score.",),
        convert=yes_minus_no,
        trainable=False,
    ),
}
# config.json's model_type -> family, for the types that need no closer look
MODEL_TYPES = {
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "deberta-v2": "deberta",
    "electra": "electra",
    "modernbert": "modernbert",
    "qwen3": "qwen3",
}


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded as the requested model."""


def known_family(config: dict[str, Any]) -> str | None:
    """The family with crossrank code for this config.json, or None."""
    model_type = config.get("model_type", "bert")
    if model_type == "bert" and config.get("position_embedding_type") == "alibi":
        return "jinabert"
    return MODEL_TYPES.get(model_type)


def family_of(config: dict[str, Any]) -> str:
    family = known_family(config)
    if family is None:
        raise CheckpointError(
            f"unsupported model_type {config.get('model_type')!r}; crossrank's own code "
            f"covers {', '.join(sorted(FAMILIES))}"
        )
    return family


def read_config(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path} has no config.json: not a Hugging Face checkpoint folder")
    return json.loads(config_file.read_text())


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if (path / "model.safetensors").is_file():
        return load_file(path / "model.safetensors")
    if (path / "model.safetensors.index.json").is_file():  # shards, as save_pretrained writes
        index = json.loads((path / "model.safetensors.index.json").read_text())
        state = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(load_file(path / shard))
        return state
    if (path / "pytorch_model.bin").is_file():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise CheckpointError(f"{path} has neither model.safetensors nor pytorch_model.bin")


def normalise_keys(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Strip the ``bert.``/``roberta.`` prefix and rename TF-era ``gamma``/``beta``."""
    out = {}
    for key, value in state.items():
        if key.startswith(prefix + "."):
            key = key[len(prefix) + 1 :]
        if key.endswith(".gamma"):
            key = key[: -len("gamma")] + "weight"
        elif key.endswith(".beta"):
            key = key[: -len("beta")] + "bias"
        if key.endswith("position_ids"):  # a buffer, recomputed
            continue
        out[key] = value
    return out


def load_model(path: str | Path, head: bool = True, trust_remote_code: bool = False) -> nn.Module:
    """Build the model described by ``path/config.json`` and load its weights.

    ``head=False`` loads the bare encoder (for embeddings), ignoring any head weights. An
    architecture without crossrank code loads through transformers (``models/fallback.py``)
    when the extra is installed; ``trust_remote_code`` lets that run a repository's code.
    """
    path = Path(path)
    raw_config = read_config(path)
    if known_family(raw_config) is None and head:
        return load_generic(path, raw_config, trust_remote_code)
    name = family_of(raw_config)
    family = FAMILIES[name]
    config = family.config.from_dict(raw_config)
    model = family.model(config, head=head)
    state = normalise_keys(read_state_dict(path), family.prefix)
    if family.convert is not None:
        state = family.convert(state, config, path)
    log.info("%s: %s (%s)", path.name, name, architecture_of(raw_config))
    expected = model.state_dict().keys()
    missing = [k for k in expected if k not in state]
    if missing:
        if head and all(k.startswith(family.head_keys) for k in missing):
            raise CheckpointError(
                f"{path} has no classification head ({', '.join(missing[:3])} missing): it is a "
                "bare encoder, not a cross-encoder"
            )
        raise CheckpointError(f"{path} is missing weights: {', '.join(missing[:5])}")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        log.debug("ignoring %d unused weights in %s, e.g. %s", len(unexpected), path, unexpected[0])
    model.load_state_dict({k: state[k] for k in expected})
    return model.eval()


def load_generic(path: Path, config: dict[str, Any], trust_remote_code: bool) -> nn.Module:
    if not fallback.transformers_installed():
        raise CheckpointError(fallback.missing_extra_message(config, sorted(FAMILIES)))
    try:
        model = fallback.load_fallback(path, config, trust_remote_code)
    except (ValueError, OSError) as error:
        raise CheckpointError(str(error)) from None
    log.warning(
        "%s: %s has no crossrank code; loaded through transformers (the generic, slower path)",
        path.name,
        model.config.architecture,
    )
    return model


def save_model(model: Bert, path: str | Path) -> None:
    """Write ``config.json`` and ``model.safetensors`` in the layout ``transformers`` reads."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    family = next(f for f in FAMILIES.values() if type(model) is f.model)
    config = dict(vars(model.config))
    config.update(
        model_type=family.model_type,
        architectures=[family.architecture],
        id2label={str(i): f"LABEL_{i}" for i in range(model.config.num_labels)},
    )
    config.pop("num_labels")
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    # transformers keeps the head at the top level and the encoder under the prefix
    state = {
        (k if k.startswith(family.top_level) else f"{family.prefix}.{k}"): v.detach().contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(state, path / "model.safetensors")
