"""Model families and checkpoint loading.

Each family lives in its own file (``bert.py``, ``jinabert.py``, ``roberta.py``); this
module picks the family from a checkpoint's ``config.json`` and loads/saves weights in
the Hugging Face layout.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from crossrank.models.bert import Bert, BertConfig
from crossrank.models.jinabert import JinaBert, JinaBertConfig
from crossrank.models.roberta import Roberta, RobertaConfig

log = logging.getLogger(__name__)

# family -> (config class, model class, key prefix used by transformers)
FAMILIES: dict[str, tuple[type[BertConfig], type[Bert], str]] = {
    "bert": (BertConfig, Bert, "bert"),
    "jinabert": (JinaBertConfig, JinaBert, "bert"),
    "roberta": (RobertaConfig, Roberta, "roberta"),
}
ARCHITECTURES = {
    "bert": "BertForSequenceClassification",
    "jinabert": "JinaBertForSequenceClassification",
    "roberta": "XLMRobertaForSequenceClassification",
}


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded as the requested model."""


def family_of(config: dict[str, Any]) -> str:
    model_type = config.get("model_type", "bert")
    if model_type in ("roberta", "xlm-roberta"):
        return "roberta"
    if model_type == "bert" and config.get("position_embedding_type") == "alibi":
        return "jinabert"
    if model_type == "bert":
        return "bert"
    raise CheckpointError(
        f"unsupported model_type {model_type!r}; crossrank loads BERT, JinaBERT and "
        "(XLM-)RoBERTa checkpoints"
    )


def read_config(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path} has no config.json: not a Hugging Face checkpoint folder")
    return json.loads(config_file.read_text())


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if (path / "model.safetensors").is_file():
        return load_file(path / "model.safetensors")
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


def load_model(path: str | Path, head: bool = True) -> Bert:
    """Build the model described by ``path/config.json`` and load its weights.

    ``head=False`` loads the bare encoder (for embeddings), ignoring any head weights.
    """
    path = Path(path)
    raw_config = read_config(path)
    family = family_of(raw_config)
    config_cls, model_cls, prefix = FAMILIES[family]
    config = config_cls.from_dict(raw_config)
    model = model_cls(config, head=head)
    state = normalise_keys(read_state_dict(path), prefix)
    expected = model.state_dict().keys()
    missing = [k for k in expected if k not in state]
    if missing:
        head_keys = ("pooler.", "classifier.")
        if head and all(k.startswith(head_keys) for k in missing):
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


def save_model(model: Bert, path: str | Path) -> None:
    """Write ``config.json`` and ``model.safetensors`` in the layout ``transformers`` reads."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    family = next(name for name, (_, cls, _) in FAMILIES.items() if type(model) is cls)
    _, _, prefix = FAMILIES[family]
    config = dict(vars(model.config))
    config.update(
        model_type="xlm-roberta" if family == "roberta" else "bert",
        architectures=[ARCHITECTURES[family]],
        id2label={str(i): f"LABEL_{i}" for i in range(model.config.num_labels)},
    )
    config.pop("num_labels")
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    # transformers keeps the head at the top level and the encoder under the prefix
    state = {
        (k if k.startswith("classifier.") else f"{prefix}.{k}"): v.detach().contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(state, path / "model.safetensors")
