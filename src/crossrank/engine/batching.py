"""Length-aware batching: sort inputs by length and pack them under a token budget.

Padding is what makes cross-encoders slow: a batch costs (pairs x its longest pair).
Sorting by length keeps similar lengths together, and a token budget (rather than a
fixed pair count) gives many short pairs or few long ones per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from crossrank.engine.tokenization import PairFeatures


def pack_by_tokens(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Group indices into batches whose padded size (count x longest) fits ``max_tokens``.

    Longest inputs come first, so the peak memory of a call shows in its first batch.
    An input longer than the budget gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    for index in order:
        if batches and lengths[batches[-1][0]] * (len(batches[-1]) + 1) <= max_tokens:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def collate(
    features: Sequence[PairFeatures], pad_id: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest input."""
    longest = max(len(f) for f in features)
    # one tensor built from Python lists: cheaper than a small copy per row
    lengths = [len(f) for f in features]
    input_ids = torch.tensor([f.input_ids + [pad_id] * (longest - len(f)) for f in features])
    token_type_ids = torch.tensor([f.token_type_ids + [0] * (longest - len(f)) for f in features])
    attention_mask = (torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]).long()
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "token_type_ids": token_type_ids.to(device),
    }
