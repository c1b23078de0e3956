"""Sentence embeddings with crossrank's own BERT: the all-MiniLM-L6-v2 recipe.

sentence-transformers' recipe for this model is: tokenize (truncate at 256 tokens),
run BERT, mean-pool the last hidden states over the attention mask, L2-normalise.
It is re-done here with crossrank's model code so that dense retrieval does not pull
in sentence-transformers/transformers at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from crossrank.engine.batching import pack_by_tokens
from crossrank.engine.hub import all_minilm_l6_v2_path, resolve_checkpoint
from crossrank.engine.runtime import pick_device
from crossrank.engine.tokenization import load_tokenizer
from crossrank.models import load_model


class Embedder:
    """Texts -> unit vectors; cosine similarity is then a dot product."""

    def __init__(
        self,
        name_or_path: str | Path | None = None,
        *,
        device: str | torch.device | None = None,
        max_length: int = 256,
        max_batch_tokens: int = 16384,
    ):
        path = all_minilm_l6_v2_path() if name_or_path is None else resolve_checkpoint(name_or_path)
        self.path = Path(path)
        self.device = pick_device(device)
        self.model = load_model(self.path, head=False).to(self.device)
        self.tokenizer = load_tokenizer(self.path)
        self.tokenizer.no_padding()  # batches are padded to their own longest text
        self.tokenizer.no_truncation()  # we truncate ourselves, keeping [SEP] at the end
        self.max_length = min(max_length, self.model.config.max_tokens)
        self.max_batch_tokens = max_batch_tokens
        self.dimension = self.model.config.hidden_size

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        ids = []
        for encoding in self.tokenizer.encode_batch(list(texts)):
            tokens = encoding.ids
            if len(tokens) > self.max_length:  # [CLS] ... [SEP] like the HF tokenizer
                tokens = [*tokens[: self.max_length - 1], tokens[-1]]
            ids.append(tokens)
        return ids

    def encode(
        self, texts: Sequence[str], progress: bool = False, desc: str = "embedding"
    ) -> np.ndarray:
        """A (len(texts), dimension) float32 array of L2-normalised embeddings, in order."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not a single string")
        return self.encode_ids(self.tokenize(texts), progress, desc)

    def windows(self, text: str, overlap: int = 32) -> list[list[int]]:
        """Token ids of overlapping windows that together cover all of ``text``."""
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        body = self.max_length - 2
        encoding.truncate(body, stride=overlap)
        cls_id, sep_id = self.tokenizer.token_to_id("[CLS]"), self.tokenizer.token_to_id("[SEP]")
        return [[cls_id, *w.ids, sep_id] for w in [encoding, *encoding.overflowing]]

    @torch.inference_mode()
    def encode_ids(
        self, ids: Sequence[list[int]], progress: bool = False, desc: str = "embedding"
    ) -> np.ndarray:
        """Embeddings of already tokenized texts (each at most ``max_length`` ids)."""
        out = np.zeros((len(ids), self.dimension), dtype=np.float32)
        batches = pack_by_tokens([len(t) for t in ids], self.max_batch_tokens)
        with tqdm(total=len(ids), desc=desc, unit="text", disable=not progress) as bar:
            for batch in batches:
                longest = max(len(ids[i]) for i in batch)
                input_ids = torch.zeros((len(batch), longest), dtype=torch.long)
                mask = torch.zeros((len(batch), longest), dtype=torch.long)
                for row, i in enumerate(batch):
                    input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                    mask[row, : len(ids[i])] = 1
                input_ids, mask = input_ids.to(self.device), mask.to(self.device)
                hidden = self.model.encode(input_ids, mask, torch.zeros_like(input_ids))
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                out[batch] = F.normalize(pooled.float(), dim=-1).cpu().numpy()
                bar.update(len(batch))
        return out
