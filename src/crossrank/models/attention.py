"""Multi-head attention shared by every model family, with optional ALiBi bias.

ALiBi (Press et al., 2022) adds ``-m_h * |i - j|`` to the attention scores of head ``h``
instead of adding position embeddings to the input. The bias depends on the sequence
length, so it is built for each batch rather than precomputed for the maximum length
(a 12 x 8192 x 8192 float buffer would be 3.2 GB). Long sequences are processed in
blocks of query rows, so the largest temporary is (batch, heads, block, length) and
memory grows linearly with length instead of quadratically.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Largest number of attention-score elements materialised at once per block
# (32M floats = 128 MB in fp32). Short sequences fit in one block.
MAX_SCORE_ELEMENTS = 32 * 1024 * 1024


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """The standard ALiBi slopes, one per head.

    For a power of two n the slopes are 2^(-8/n), 2^(-16/n), ... For other head counts
    the slopes of the nearest lower power of two come first, then every other slope of
    the doubled set (12 heads: 2^-1 ... 2^-8, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5).
    """

    def power_of_two_slopes(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_two_slopes(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_two_slopes(closest)
        slopes += power_of_two_slopes(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, length) 1/0 mask -> (batch, 1, 1, length) additive bias.

    A large finite negative (not -inf) keeps rows that are entirely padding finite.
    """
    bias = (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
    return bias


class TokenLayout:
    """Moves a batch between the padded (batch, length, ...) layout and packed real tokens.

    Position-wise layers (the linear projections, LayerNorm, the feed-forward block) run
    on packed tokens, so padding costs them nothing; only attention needs the padded
    layout. Rerank batches mix lengths, so this removes much of a padded batch's work.
    """

    def __init__(self, attention_mask: torch.Tensor):
        self.batch, self.length = attention_mask.shape
        self.index = self.padding = None
        if not attention_mask.all():
            flat = attention_mask.flatten()
            self.index = flat.nonzero().squeeze(1)
            self.padding = (flat == 0).nonzero().squeeze(1)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, length, ...) -> (tokens, ...)"""
        x = x.flatten(0, 1)
        return x if self.index is None else x.index_select(0, self.index)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(tokens, ...) -> (batch, length, ...), zeros at the padding."""
        if self.index is not None:
            padded = x.new_empty(self.batch * self.length, *x.shape[1:])
            padded.index_copy_(0, self.index, x)
            x = padded.index_fill_(0, self.padding, 0.0)  # masked, but must not be NaN
        return x.view(self.batch, self.length, *x.shape[1:])


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    slopes: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """softmax(q kᵀ / √d + bias [+ ALiBi]) v for q, k, v of shape (batch, heads, length, dim).

    ``bias`` is the (batch, 1, 1, length) padding bias; ``slopes`` (heads,) turns on ALiBi.
    """
    batch, heads, length, _ = q.shape
    if slopes is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)

    block = max(1, min(length, MAX_SCORE_ELEMENTS // max(1, batch * heads * length)))
    positions = torch.arange(length, device=q.device)
    slopes = slopes.to(device=q.device, dtype=torch.float32)[:, None, None]
    outputs = []
    for start in range(0, length, block):
        rows = positions[start : start + block]
        distance = (rows[:, None] - positions[None, :]).abs()
        alibi = (-slopes * distance).to(q.dtype)  # (heads, block, length)
        outputs.append(
            F.scaled_dot_product_attention(
                q[:, :, start : start + block], k, v, attn_mask=alibi + bias, dropout_p=dropout_p
            )
        )
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
