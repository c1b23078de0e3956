"""Turn (query, document) pairs into model inputs with the checkpoint's own tokenizer.

The query is capped at ``query_max_length`` tokens and the document gets the rest of
``max_length``, so a long document can never push the query out of the input. Documents
longer than their share are either truncated or split into overlapping windows that
are each paired with the query (the caller max-pools their scores).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tokenizers import Encoding, Tokenizer

log = logging.getLogger(__name__)

LongDocuments = Literal["truncate", "chunk"]


@dataclass(frozen=True, slots=True)
class PairFeatures:
    """One model input: a query paired with a document, or with one window of it."""

    input_ids: list[int]
    token_type_ids: list[int]
    document: int  # index of the document this input scores

    def __len__(self) -> int:
        return len(self.input_ids)


def load_tokenizer(path: Path) -> Tokenizer:
    """The checkpoint's ``tokenizer.json``; a WordPiece ``vocab.txt`` is accepted for old BERTs."""
    if (path / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(path / "tokenizer.json"))
    if (path / "vocab.txt").is_file():
        from tokenizers.implementations import BertWordPieceTokenizer

        settings_file = path / "tokenizer_config.json"
        settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
        lowercase = settings.get("do_lower_case", True)
        return BertWordPieceTokenizer(str(path / "vocab.txt"), lowercase=lowercase)._tokenizer
    raise FileNotFoundError(f"{path} has no tokenizer.json (nor a WordPiece vocab.txt)")


class PairEncoder:
    def __init__(
        self,
        tokenizer: Tokenizer,
        max_length: int,
        query_max_length: int | None = None,
        long_documents: LongDocuments = "truncate",
        overlap: int | None = None,
    ):
        if long_documents not in ("truncate", "chunk"):
            raise ValueError(
                f"long_documents must be 'truncate' or 'chunk', not {long_documents!r}"
            )
        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self.tokenizer.no_truncation()  # we truncate ourselves, per side
        self.tokenizer.no_padding()  # batches are padded to their own longest input
        self.max_length = max_length
        self.num_special = self.tokenizer.num_special_tokens_to_add(is_pair=True)
        self.query_max_length = query_max_length or max_length // 4
        if self.query_max_length + self.num_special >= max_length:
            raise ValueError(
                f"query_max_length={self.query_max_length} leaves no room for the document "
                f"in max_length={max_length}"
            )
        self.long_documents = long_documents
        self.overlap = overlap

    def encode_query(self, query: str) -> Encoding:
        encoding = self.tokenizer.encode(query, add_special_tokens=False)
        if len(encoding) > self.query_max_length:
            log.warning(
                "query of %d tokens capped at query_max_length=%d",
                len(encoding),
                self.query_max_length,
            )
            encoding.truncate(self.query_max_length)
        return encoding

    def encode(self, query: str, documents: Sequence[str]) -> list[PairFeatures]:
        """Inputs for every document, in order; with chunking a document may give several."""
        query_encoding = self.encode_query(query)
        budget = self.max_length - self.num_special - len(query_encoding)
        features = []
        for index, document in enumerate(
            self.tokenizer.encode_batch(documents, add_special_tokens=False)
        ):
            for window in self.windows(document, budget):
                pair = self.tokenizer.post_process(query_encoding, window)
                features.append(PairFeatures(pair.ids, pair.type_ids, index))
        return features

    def windows(self, document: Encoding, budget: int) -> list[Encoding]:
        if len(document) <= budget:
            return [document]
        if self.long_documents == "truncate":
            document.truncate(budget)
            return [document]
        overlap = budget // 4 if self.overlap is None else min(self.overlap, budget - 1)
        document.truncate(budget, stride=overlap)
        return [document, *document.overflowing]
