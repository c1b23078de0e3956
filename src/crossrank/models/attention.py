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
from torch.nn.attention import SDPBackend, sdpa_kernel

# Largest number of attention-score elements materialised at once per block
# (32M floats = 128 MB in fp32). Short sequences fit in one block.
MAX_SCORE_ELEMENTS = 32 * 1024 * 1024
# Devices on which attention runs row by row on the packed tokens (see TokenLayout).
PER_ROW_DEVICES = ("cpu",)
# CUDA attention kernels allowed. Not cuDNN's: it builds a kernel for every new (batch,
# length) shape, which rerank traffic keeps producing (see docs/performance.md, GPU).
CUDA_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def sdpa(q, k, v, attn_mask, dropout_p):
    if q.is_cuda:
        with sdpa_kernel(CUDA_SDPA_BACKENDS):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)


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
    """Where the real tokens of a right-padded batch are, and attention over them.

    Position-wise layers (the linear projections, LayerNorm, the feed-forward block) run
    on packed real tokens (tokens, ...), so padding costs them nothing. Attention then
    runs either on the padded (batch, length, ...) layout with a padding bias (CUDA: one
    large kernel is faster than many small ones) or one row at a time on the packed
    tokens themselves (CPU, ``per_row``: no padding, no bias, no pack/unpack copies).

    ``first`` holds the packed position of each row's first token ([CLS]), the only
    position a cross-encoder's head reads: the last layer can compute attention queries,
    the output projection and the feed-forward block for those positions alone.
    """

    def __init__(self, attention_mask: torch.Tensor, per_row: bool | None = None):
        self.batch, self.length = attention_mask.shape
        self.index = self.padding = None
        if not attention_mask.all():
            flat = attention_mask.flatten()
            self.index = flat.nonzero().squeeze(1)
            self.padding = (flat == 0).nonzero().squeeze(1)
        lengths = attention_mask.sum(1)
        # right padding (real tokens first in every row, none empty): the batches crossrank
        # builds itself; anything else takes the general padded path
        self.right_padded = bool(
            attention_mask[:, 0].all() and (attention_mask[:, :-1] >= attention_mask[:, 1:]).all()
        )
        if per_row is None:
            per_row = attention_mask.device.type in PER_ROW_DEVICES
        self.per_row = per_row and self.right_padded
        self.lengths = lengths.tolist() if self.per_row else None
        self.first = torch.cumsum(lengths, 0) - lengths if self.right_padded else None

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

    def first_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(tokens, ...) -> (batch, ...): each row's first token."""
        return x.index_select(0, self.first)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        heads: int,
        bias: torch.Tensor | None,
        slopes: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        first_only: bool = False,
    ) -> torch.Tensor:
        """Multi-head attention on packed tokens: k, v (tokens, hidden); q the same, or
        (batch, hidden) for each row's first token alone (``first_only``). Returns the
        context in q's layout."""
        hidden = k.shape[-1]

        def heads_first(x):  # (..., length, hidden) -> (..., heads, length, head_dim)
            return x.unflatten(-1, (heads, -1)).transpose(-3, -2)

        if self.per_row:
            out, start = [], 0
            for row, n in enumerate(self.lengths):
                rows = slice(row, row + 1) if first_only else slice(start, start + n)
                context = attention(
                    heads_first(q[rows])[None],
                    heads_first(k[start : start + n])[None],
                    heads_first(v[start : start + n])[None],
                    None,
                    slopes,
                    dropout_p,
                )
                out.append(context[0].transpose(0, 1).reshape(-1, hidden))
                start += n
            return torch.cat(out)
        q = q[:, None] if first_only else self.unpack(q)
        context = attention(
            heads_first(q),
            heads_first(self.unpack(k)),
            heads_first(self.unpack(v)),
            bias,
            slopes,
            dropout_p,
        )
        context = context.transpose(1, 2).flatten(2)  # (batch, length, hidden)
        return context[:, 0] if first_only else self.pack(context)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    slopes: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """softmax(q kᵀ / √d + bias [+ ALiBi]) v for q (batch, heads, queries, dim) and k, v
    (batch, heads, length, dim); the queries are the first positions of the sequence.

    ``bias`` is the (batch, 1, 1, length) padding bias or None; ``slopes`` (heads,) turns
    on ALiBi.
    """
    batch, heads, queries, _ = q.shape
    length = k.shape[2]
    if slopes is None:
        return sdpa(q, k, v, bias, dropout_p)

    block = max(1, min(queries, MAX_SCORE_ELEMENTS // max(1, batch * heads * length)))
    positions = torch.arange(length, device=q.device)
    slopes = slopes.to(device=q.device, dtype=torch.float32)[:, None, None]
    outputs = []
    for start in range(0, queries, block):
        rows = positions[start : start + block]
        distance = (rows[:, None] - positions[None, :]).abs()
        mask = (-slopes * distance).to(q.dtype)[None]  # (1, heads, block, length)
        if bias is not None:
            mask = mask + bias
        outputs.append(sdpa(q[:, :, start : start + block], k, v, mask, dropout_p))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
