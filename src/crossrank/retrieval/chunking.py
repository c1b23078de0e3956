"""Split documents into overlapping passages that fit the embedding model's window.

Chunks are cut on token boundaries of the embedder's own tokenizer (so none is
silently truncated when embedded) and mapped back to character spans of the original
text, so that results can show the exact passage. A cut never splits a word.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int  # character offsets into the document text
    end: int


class Chunker:
    """Windows of at most ``max_tokens`` tokens, consecutive ones sharing ~``overlap``."""

    def __init__(self, tokenizer: Tokenizer, max_tokens: int = 200, overlap: int = 40):
        if not 0 <= overlap < max_tokens:
            raise ValueError(f"overlap ({overlap}) must be in [0, max_tokens={max_tokens})")
        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self.tokenizer.no_padding()  # checkpoints often ship with padding/truncation on
        self.tokenizer.no_truncation()
        self.max_tokens = max_tokens
        self.overlap = overlap

    def __call__(self, text: str) -> list[Chunk]:
        offsets = self.tokenizer.encode(text, add_special_tokens=False).offsets
        if not offsets:
            return []
        chunks, first = [], 0
        while True:
            last = min(first + self.max_tokens, len(offsets))  # exclusive
            # back off while the cut would fall inside a word (the next token touches it)
            while last < len(offsets) and last > first + 1 and touching(offsets, last):
                last -= 1
            start, end = offsets[first][0], offsets[last - 1][1]
            chunks.append(Chunk(text[start:end], start, end))
            if last >= len(offsets):
                return chunks
            first = max(last - self.overlap, first + 1)
            while first < last and touching(offsets, first):
                first += 1  # start on a word boundary too


def touching(offsets: list[tuple[int, int]], i: int) -> bool:
    """Whether token ``i`` continues token ``i - 1`` with no space between them."""
    return offsets[i][0] == offsets[i - 1][1]
