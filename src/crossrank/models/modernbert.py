"""ModernBERT: the architecture of ``ModernBertForSequenceClassification`` checkpoints.

A pre-norm encoder with no position embeddings: positions enter as rotary embeddings
(RoPE) on the queries and keys, with one base for the global layers and another for the
local ones. Every ``global_attn_every_n_layers``-th layer attends over the whole input;
the others see only a sliding window of ``local_attention`` tokens (±local_attention/2),
which is what makes 8,192-token inputs affordable. The feed-forward block is a GeGLU.

Parameter names follow the Hugging Face layout (``layers.N.attn.Wqkv``, ``mlp.Wi``, ...);
the encoder sits under ``model.`` in checkpoints, the head and classifier at the top.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from crossrank.models.attention import TokenLayout, padding_bias, sdpa
from crossrank.models.bert import ACTIVATIONS, config_values

# Queries per block of local attention: a block's scores span block x (block + window)
# keys per head, never length x length.
QUERY_BLOCK = 512
# config.json keys of the rotary bases, transformers 5 (rope_parameters) -> before (flat)
ROPE_THETA_NAMES = {"full_attention": "global_rope_theta", "sliding_attention": "local_rope_theta"}


@dataclass
class ModernBertConfig:
    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192
    norm_eps: float = 1e-5
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    global_attn_every_n_layers: int = 3
    layer_types: list[str] | None = None  # "full_attention" or "sliding_attention" per layer
    local_attention: int = 128  # the whole window: each token sees ±local_attention // 2
    classifier_pooling: str = "cls"  # or "mean" over the real tokens
    classifier_bias: bool = False
    classifier_activation: str = "gelu"
    pad_token_id: int = 50283
    num_labels: int = 1

    def __post_init__(self):
        if self.layer_types is None:  # the older configs give the pattern as one number
            every = self.global_attn_every_n_layers
            self.layer_types = [
                "sliding_attention" if i % every else "full_attention"
                for i in range(self.num_hidden_layers)
            ]
        if self.classifier_pooling not in ("cls", "mean"):
            raise ValueError(
                f"classifier_pooling must be 'cls' or 'mean', not {self.classifier_pooling!r}"
            )

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> ModernBertConfig:
        """Reads both the flat rotary bases of older configs and transformers 5's
        ``rope_parameters``."""
        config = dict(config)
        for layer_type, name in ROPE_THETA_NAMES.items():
            rope = (config.get("rope_parameters") or {}).get(layer_type)
            if rope:
                if rope.get("rope_type", "default") != "default":
                    raise ValueError(
                        f"unsupported rope_type {rope['rope_type']!r} for {layer_type}"
                    )
                config[name] = rope["rope_theta"]
        return cls(**config_values(cls, config))

    @property
    def max_tokens(self) -> int:
        """Longest input the model was trained for (RoPE itself has no limit)."""
        return self.max_position_embeddings

    def rope_theta(self, layer_type: str) -> float:
        return getattr(self, ROPE_THETA_NAMES[layer_type])


def layer_norm(config: ModernBertConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)


def rotary(positions: Tensor, base: float, dim: int) -> tuple[Tensor, Tensor]:
    """cos and sin (tokens, 1, dim) of RoPE at each token's position, computed as
    transformers does (float32, each frequency twice: rotate_half pairs i with i + dim/2)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    freqs = positions[:, None].float() * inv_freq.to(positions.device)
    angles = torch.cat((freqs, freqs), dim=-1)[:, None]
    return angles.cos(), angles.sin()


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (tokens, heads, dim) turned by the angles of its positions."""
    half = x.float().chunk(2, dim=-1)
    rotated_half = torch.cat((-half[1], half[0]), dim=-1)
    return (x.float() * cos + rotated_half * sin).to(x.dtype)


def local_attention(q: Tensor, k: Tensor, v: Tensor, half: int, real: Tensor | None) -> Tensor:
    """Attention in which query i sees the keys j with |i - j| <= half, for q, k, v
    (batch, heads, length, dim); ``real`` (batch, length) marks the real tokens, None when
    all are. Queries go in blocks, each with only the keys its window reaches."""
    length = q.shape[2]
    positions = torch.arange(length, device=q.device)
    blocks = []
    for start in range(0, length, QUERY_BLOCK):
        stop = min(start + QUERY_BLOCK, length)
        low, high = max(0, start - half), min(length, stop + half)
        allowed = (positions[start:stop, None] - positions[None, low:high]).abs() <= half
        if real is not None:
            allowed = allowed & real[:, None, None, low:high].bool()
        # one finite minimum, not -inf: a padded query whose window holds only padding
        # stays finite (it is dropped afterwards)
        bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device)
        bias.masked_fill_(~allowed, torch.finfo(q.dtype).min)
        blocks.append(sdpa(q[:, :, start:stop], k[:, :, low:high], v[:, :, low:high], bias, 0.0))
    return torch.cat(blocks, dim=2)


class ModernBertEmbeddings(nn.Module):
    """Token embeddings, then LayerNorm; no positions (those are rotary)."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.norm = layer_norm(config)

    def forward(self, input_ids):
        return self.norm(self.tok_embeddings(input_ids))


class ModernBertAttention(nn.Module):
    def __init__(self, config: ModernBertConfig, sliding: bool):
        super().__init__()
        self.num_heads = config.num_attention_heads
        hidden = config.hidden_size
        self.Wqkv = nn.Linear(hidden, 3 * hidden, bias=config.attention_bias)
        self.Wo = nn.Linear(hidden, hidden, bias=config.attention_bias)
        self.half_window = config.local_attention // 2 if sliding else None

    def forward(self, x, rotation, layout: TokenLayout, real):
        """x: packed tokens (tokens, hidden); rotation: the (cos, sin) of their positions."""
        q, k, v = self.Wqkv(x).unflatten(-1, (3, self.num_heads, -1)).unbind(1)
        q, k = rotate(q, *rotation), rotate(k, *rotation)
        return self.Wo(self.attend(q, k, v, layout, real).flatten(1))

    def attend(self, q, k, v, layout, real):
        """q, k, v (tokens, heads, dim) -> context in the same layout: one row at a time on
        the packed tokens (CPU), or on the padded batch with ``real`` marking the tokens."""
        if layout.per_row:
            out, start = [], 0
            for n in layout.lengths:
                row = [x[start : start + n].transpose(0, 1)[None] for x in (q, k, v)]
                out.append(self.attention(*row, None)[0].transpose(0, 1))
                start += n
            return torch.cat(out)
        padded = [layout.unpack(x).transpose(1, 2) for x in (q, k, v)]
        return layout.pack(self.attention(*padded, real).transpose(1, 2))

    def attention(self, q, k, v, real):
        if self.half_window is not None:
            return local_attention(q, k, v, self.half_window, real)
        # global: SDPA with at most a (batch, 1, 1, length) padding bias, no L x L mask
        return sdpa(q, k, v, None if real is None else padding_bias(real, q.dtype), 0.0)


class ModernBertMLP(nn.Module):
    """GeGLU: Wo(act(input) * gate), input and gate the two halves of Wi(x)."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)
        self.act = ACTIVATIONS[config.hidden_activation]
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x):
        input, gate = self.Wi(x).chunk(2, dim=-1)
        return self.Wo(self.act(input) * gate)


class ModernBertEncoderLayer(nn.Module):
    """Pre-norm: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModernBertConfig, number: int):
        super().__init__()
        # the embeddings end in a LayerNorm already, so the first layer has none of its own
        self.attn_norm = nn.Identity() if number == 0 else layer_norm(config)
        self.attn = ModernBertAttention(config, config.layer_types[number] == "sliding_attention")
        self.mlp_norm = layer_norm(config)
        self.mlp = ModernBertMLP(config)

    def forward(self, x, rotation, layout, real):
        x = x + self.attn(self.attn_norm(x), rotation, layout, real)
        return x + self.mlp(self.mlp_norm(x))


class ModernBertPredictionHead(nn.Module):
    """norm(act(dense(pooled)))."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.classifier_bias)
        self.act = ACTIVATIONS[config.classifier_activation]
        self.norm = layer_norm(config)

    def forward(self, pooled):
        return self.norm(self.act(self.dense(pooled)))


class ModernBert(nn.Module):
    """ModernBERT encoder; with ``head=True`` a cross-encoder whose forward returns logits."""

    def __init__(self, config: ModernBertConfig, head: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = ModernBertEmbeddings(config)
        self.layers = nn.ModuleList(
            ModernBertEncoderLayer(config, n) for n in range(config.num_hidden_layers)
        )
        self.final_norm = layer_norm(config)
        if head:
            self.head = ModernBertPredictionHead(config)
            self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def encode(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Last hidden states (batch, length, hidden), zeros at the padding. ModernBERT
        has no token types: ``token_type_ids`` is accepted and ignored."""
        layout = TokenLayout(attention_mask)
        batch, length = input_ids.shape
        positions = layout.pack(torch.arange(length, device=input_ids.device).expand(batch, -1))
        head_dim = self.config.hidden_size // self.config.num_attention_heads
        rotations = {
            kind: rotary(positions, self.config.rope_theta(kind), head_dim)
            for kind in set(self.config.layer_types)
        }
        real = None if layout.per_row else attention_mask
        x = self.embeddings(layout.pack(input_ids))
        for layer, kind in zip(self.layers, self.config.layer_types, strict=True):
            x = layer(x, rotations[kind], layout, real)
        return layout.unpack(self.final_norm(x))

    def pool(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        """The first token's state, or the mean over the real tokens (``classifier_pooling``)."""
        if self.config.classifier_pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask[..., None].to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Logits of shape (batch, num_labels)."""
        hidden = self.encode(input_ids, attention_mask)
        return self.classifier(self.head(self.pool(hidden, attention_mask)))
