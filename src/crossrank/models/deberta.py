"""DeBERTa-v2/v3 cross-encoders (``DebertaV2ForSequenceClassification``, e.g. mxbai-rerank-v1).

DeBERTa keeps content and position apart (He et al., 2021). The input carries no position
embeddings (v3; v2 may add them, ``position_biased_input``); instead every attention score
adds to the content-to-content term q_i·k_j a content-to-position term q_i·Kr[δ(i, j)]
(``c2p``) and a position-to-content term k_j·Qr[δ(i, j)] (``p2c``), where Kr and Qr project
a table of relative-position embeddings and δ(i, j) is the distance i - j, exact up to
±buckets/2 and log-spaced beyond (v3's ``position_buckets``). The sum is divided by
√(d · (1 + number of position terms)). The feed-forward block and the post-norm residuals
are BERT's, and run on the packed real tokens like BERT's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from crossrank.models import bert
from crossrank.models.attention import TokenLayout, padding_bias, sdpa
from crossrank.models.bert import BertConfig, Intermediate, ProjectAddNorm

# the pooler and the convolution may use tanh, which BERT's feed-forward never does
ACTIVATIONS = {**bert.ACTIVATIONS, "tanh": torch.tanh}


@dataclass
class DebertaV2Config(BertConfig):
    # defaults are transformers' DebertaV2Config, for config.json files that omit a key
    vocab_size: int = 128100
    hidden_size: int = 1536
    num_hidden_layers: int = 24
    num_attention_heads: int = 24
    intermediate_size: int = 6144
    type_vocab_size: int = 0
    layer_norm_eps: float = 1e-7
    embedding_size: int | None = None  # None: hidden_size
    position_biased_input: bool = True
    relative_attention: bool = False
    pos_att_type: tuple[str, ...] = ()
    position_buckets: int = -1
    max_relative_positions: int = -1
    share_att_key: bool = False
    norm_rel_ebd: str = "none"
    conv_kernel_size: int = 0
    conv_groups: int = 1
    conv_act: str = "tanh"
    pooler_hidden_act: str = "gelu"
    pooler_dropout: float = 0.0
    cls_dropout: float | None = None

    def __post_init__(self):
        if self.embedding_size is None:
            self.embedding_size = self.hidden_size

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> DebertaV2Config:
        kinds = config.get("pos_att_type") or ()
        if isinstance(kinds, str):  # older configs write "p2c|c2p"
            kinds = kinds.lower().split("|")
        return super().from_dict({**config, "pos_att_type": tuple(k.strip() for k in kinds)})

    @property
    def max_distance(self) -> int:
        """The distance the log buckets reach (max_relative_positions, or the input length)."""
        if self.max_relative_positions > 0:
            return self.max_relative_positions
        return self.max_position_embeddings

    @property
    def relative_span(self) -> int:
        """Relative positions each side of zero in the embedding table (2 x span rows)."""
        return self.position_buckets if self.position_buckets > 0 else self.max_distance


def log_buckets(relative: Tensor, buckets: int, max_distance: int) -> Tensor:
    """Relative distances -> positions: exact within ±buckets/2, log-spaced out to
    ±max_distance. Computed in float32 the way transformers does, so that every ceil lands
    on the same side."""
    mid = buckets // 2
    distance = relative.abs()
    scale = torch.log(torch.tensor((max_distance - 1) / mid))
    logarithmic = torch.ceil(torch.log(distance.clamp(min=mid) / mid) / scale * (mid - 1)) + mid
    return torch.where(distance <= mid, relative, logarithmic.long() * relative.sign())


def content_to_position(q: Tensor, pos_key: Tensor, index: Tensor) -> Tensor:
    """q_i · Kr[δ(i, j)] for q (..., heads, queries, d): (..., heads, queries, keys)."""
    scores = q @ pos_key.transpose(-1, -2)  # against every relative position
    return scores.gather(-1, index.expand(*scores.shape[:-1], -1))


def position_to_content(k: Tensor, pos_query: Tensor, index: Tensor) -> Tensor:
    """k_j · Qr[δ(i, j)] for k (..., heads, keys, d): (..., heads, queries, keys). δ is odd,
    so the query's position seen from the key, δ(j, i), indexes the table as -δ(i, j)."""
    scores = k @ pos_query.transpose(-1, -2)
    return scores.gather(-1, index.T.expand(*scores.shape[:-1], -1)).transpose(-1, -2)


class DisentangledSelfAttention(nn.Module):
    def __init__(self, config: DebertaV2Config):
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = hidden // self.num_heads
        self.query_proj = nn.Linear(hidden, hidden)
        self.key_proj = nn.Linear(hidden, hidden)
        self.value_proj = nn.Linear(hidden, hidden)
        terms = [t for t in ("c2p", "p2c") if t in config.pos_att_type]
        # each term counts in the scale, as in transformers, even without relative attention
        self.scale = (self.head_dim * (1 + len(terms))) ** -0.5
        self.terms = terms if config.relative_attention else []
        self.share_att_key = config.share_att_key
        if self.terms and not self.share_att_key:
            if "c2p" in self.terms:
                self.pos_key_proj = nn.Linear(hidden, hidden)
            if "p2c" in self.terms:
                self.pos_query_proj = nn.Linear(hidden, hidden)
        self.pos_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.dropout_p = config.attention_probs_dropout_prob

    def heads_first(self, x: Tensor) -> Tensor:
        """(..., length, hidden) -> (..., heads, length, head_dim)"""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(-3, -2)

    def project_positions(self, rel: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        """Kr and Qr: the relative-position table as keys (for c2p) and as queries (p2c)."""
        pos_key = pos_query = None
        if self.terms:
            rel = self.pos_dropout(rel)
        if "c2p" in self.terms:
            pos_key = self.key_proj(rel) if self.share_att_key else self.pos_key_proj(rel)
            pos_key = self.heads_first(pos_key)
        if "p2c" in self.terms:
            pos_query = self.query_proj(rel) if self.share_att_key else self.pos_query_proj(rel)
            pos_query = self.heads_first(pos_query)
        return pos_key, pos_query

    def attend(self, q, k, v, positions, index, padding):
        """softmax((q·k + c2p + p2c) · scale + padding) v for q, k, v (..., length, hidden)."""
        q, k, v = self.heads_first(q), self.heads_first(k), self.heads_first(v)
        pos_key, pos_query = positions
        terms = []
        if pos_key is not None:
            terms.append(content_to_position(q, pos_key, index))
        if pos_query is not None:
            terms.append(position_to_content(k, pos_query, index))
        bias = padding
        if terms:
            relative = sum(terms) * self.scale
            bias = relative if padding is None else relative + padding
        dropout_p = self.dropout_p if self.training else 0.0
        # sdpa divides q·k by √head_dim itself
        context = sdpa(q * (self.scale * self.head_dim**0.5), k, v, bias, dropout_p)
        return context.transpose(-3, -2).flatten(-2)

    def forward(self, x, layout: TokenLayout, padding, rel, index, first_only: bool = False):
        """x: packed tokens (tokens, hidden); with ``first_only`` the context of each row's
        first token alone (batch, hidden). Like ``TokenLayout.attend``: one row at a time
        on the packed tokens (CPU) or on the padded batch with a padding bias."""
        q = self.query_proj(layout.first_tokens(x) if first_only else x)
        k, v = self.key_proj(x), self.value_proj(x)
        positions = self.project_positions(rel)
        if layout.per_row:
            out, start = [], 0
            for row, n in enumerate(layout.lengths):
                queries = slice(row, row + 1) if first_only else slice(start, start + n)
                keys = slice(start, start + n)
                rows = corner(index, 1 if first_only else n, n)
                out.append(self.attend(q[queries], k[keys], v[keys], positions, rows, None))
                start += n
            return torch.cat(out)
        q = q[:, None] if first_only else layout.unpack(q)
        rows = corner(index, 1 if first_only else layout.length, layout.length)
        context = self.attend(q, layout.unpack(k), layout.unpack(v), positions, rows, padding)
        return context[:, 0] if first_only else layout.pack(context)


def corner(index: Tensor | None, queries: int, keys: int) -> Tensor | None:
    """The relative positions of the first ``queries`` positions against the first ``keys``:
    they depend on i - j alone, so one table built for the longest row serves every row."""
    return None if index is None else index[:queries, :keys]


class Attention(nn.Module):
    def __init__(self, config: DebertaV2Config):
        super().__init__()
        self.self = DisentangledSelfAttention(config)
        self.output = ProjectAddNorm(config.hidden_size, config)

    def forward(self, x, layout, padding, rel, index, first_only: bool = False):
        context = self.self(x, layout, padding, rel, index, first_only)
        return self.output(context, layout.first_tokens(x) if first_only else x)


class DebertaLayer(nn.Module):
    def __init__(self, config: DebertaV2Config):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = ProjectAddNorm(config.intermediate_size, config)

    def forward(self, x, layout, padding, rel, index, first_only: bool = False):
        x = self.attention(x, layout, padding, rel, index, first_only)
        return self.output(self.intermediate(x), x)


class DebertaEmbeddings(nn.Module):
    """word [+ absolute position] [+ token type], projected to the hidden size, LayerNorm.

    transformers then zeroes the padding positions; crossrank drops them (packs the real
    tokens), and the convolution reads them as the zeros ``TokenLayout.unpack`` puts there.
    """

    def __init__(self, config: DebertaV2Config):
        super().__init__()
        size = config.embedding_size
        self.word_embeddings = nn.Embedding(config.vocab_size, size)
        self.position_embeddings = (
            nn.Embedding(config.max_position_embeddings, size)
            if config.position_biased_input
            else None
        )
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, size) if config.type_vocab_size > 0 else None
        )
        self.embed_proj = (
            nn.Linear(size, config.hidden_size, bias=False) if size != config.hidden_size else None
        )
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        x = self.word_embeddings(input_ids)
        if self.position_embeddings is not None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            x = x + self.position_embeddings(positions)[None]
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings(token_type_ids)
        if self.embed_proj is not None:
            x = self.embed_proj(x)
        return self.dropout(self.LayerNorm(x))


class ConvLayer(nn.Module):
    """DeBERTa-v2 (xlarge and up): LayerNorm(first layer's output + act(conv(embeddings)))."""

    def __init__(self, config: DebertaV2Config):
        super().__init__()
        size = config.conv_kernel_size
        hidden = config.hidden_size
        self.conv = nn.Conv1d(
            hidden, hidden, size, padding=(size - 1) // 2, groups=config.conv_groups
        )
        self.activation = ACTIVATIONS[config.conv_act]
        self.LayerNorm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, embedded, x, layout: TokenLayout, first_only: bool = False):
        # on the padded batch: the kernel reaches across each row's end into zeros
        out = layout.pack(self.conv(layout.unpack(embedded).transpose(1, 2)).transpose(1, 2))
        out = layout.first_tokens(out) if first_only else out
        return self.LayerNorm(x + self.activation(self.dropout(out)))


class DebertaEncoder(nn.Module):
    def __init__(self, config: DebertaV2Config):
        super().__init__()
        self.layer = nn.ModuleList([DebertaLayer(config) for _ in range(config.num_hidden_layers)])
        self.relative_attention = config.relative_attention
        self.span = config.relative_span
        self.buckets, self.max_distance = config.position_buckets, config.max_distance
        if self.relative_attention:
            self.rel_embeddings = nn.Embedding(2 * self.span, config.hidden_size)
        norms = [n.strip() for n in config.norm_rel_ebd.lower().split("|")]
        if "layer_norm" in norms:
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.conv = ConvLayer(config) if config.conv_kernel_size > 0 else None

    def relative_positions(self, length: int, device) -> tuple[Tensor | None, Tensor | None]:
        """The relative-position table, normalised, and for every (query i, key j) the row
        of it that δ(i, j) selects: (2 span, hidden) and (length, length), or Nones."""
        if not self.relative_attention:
            return None, None
        rel = self.rel_embeddings.weight
        if hasattr(self, "LayerNorm"):
            rel = self.LayerNorm(rel)
        positions = torch.arange(length, device=device)
        relative = positions[:, None] - positions[None, :]
        if self.buckets > 0:
            relative = log_buckets(relative, self.buckets, self.max_distance)
        return rel, (relative + self.span).clamp(0, 2 * self.span - 1)


class ContextPooler(nn.Module):
    """activation(dense(first token)), GELU by default where BERT's pooler uses tanh."""

    def __init__(self, config: DebertaV2Config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.pooler_dropout)
        self.activation = ACTIVATIONS[config.pooler_hidden_act]

    def forward(self, hidden):
        return self.activation(self.dense(self.dropout(hidden[:, 0])))


class DebertaV2(nn.Module):
    """DeBERTa-v2/v3 encoder; with ``head=True`` a cross-encoder whose forward returns logits."""

    def __init__(self, config: DebertaV2Config, head: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = DebertaEmbeddings(config)
        self.encoder = DebertaEncoder(config)
        if head:
            self.pooler = ContextPooler(config)
            dropout = (
                config.hidden_dropout_prob if config.cls_dropout is None else config.cls_dropout
            )
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def classify(self, hidden: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.pooler(hidden)))

    def encode(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None = None,
        first_only: bool = False,
    ) -> Tensor:
        """Last hidden states (batch, length, hidden), zeros at the padding; with
        ``first_only`` each row's first token alone (batch, 1, hidden), as ``Bert.encode``."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        layout = TokenLayout(attention_mask)
        padding = None if layout.per_row else padding_bias(attention_mask, x.dtype)
        rel, index = self.encoder.relative_positions(input_ids.shape[1], input_ids.device)
        shortcut = first_only and layout.right_padded
        x = embedded = layout.pack(x)
        last = len(self.encoder.layer) - 1
        for number, layer in enumerate(self.encoder.layer):
            x = layer(x, layout, padding, rel, index, shortcut and number == last)
            if number == 0 and self.encoder.conv is not None:
                x = self.encoder.conv(embedded, x, layout, shortcut and number == last)
        if shortcut:
            return x[:, None]
        return layout.unpack(x)[:, :1] if first_only else layout.unpack(x)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Logits of shape (batch, num_labels)."""
        return self.classify(self.encode(input_ids, attention_mask, token_type_ids, True))
