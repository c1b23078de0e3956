"""Qwen3 decoder rerankers: Qwen3-Reranker's "yes"/"no" answer as a cross-encoder logit.

Qwen3-Reranker is a causal language model (``Qwen3ForCausalLM``) asked, through a chat
prompt (``PROMPT``), whether a document meets a query; the answer is its next token. The
relevance logit is logit("yes") - logit("no") at the last position, so sigmoid(logit) is
the P("yes") of the two-way softmax its model card computes, and everything crossrank does
with an encoder's logit (ranking, scores in [0, 1], batching by tokens) applies unchanged.
Only two rows of the language-model head matter, so at load they become one ``score``
row (W_yes - W_no) and the 151k-row head is never built. The sequence-classification
conversions (``Qwen3ForSequenceClassification``, e.g. tomaarsen/Qwen3-Reranker-0.6B-seq-cls)
store that same row as their ``score`` layer; both load into ``Qwen3``.

The decoder: pre-norm layers of grouped-query attention (RMSNorm on each head's queries
and keys, then RoPE) and a SwiGLU feed-forward, RMSNorm throughout. Inputs are right-padded,
so causal attention never reaches the padding, and each row's logit is read at its last
real token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossrank.engine.tokenization import PairPrompt
from crossrank.models.attention import TokenLayout
from crossrank.models.bert import config_values
from crossrank.models.modernbert import rotary, rotate

# The model card's prompt; its example code reads 8,192 tokens at most.
PROMPT = PairPrompt(
    before_query=(
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the "
        'Query and the Instruct provided. Note that the answer can only be "yes" or "no".'
        "<|im_end|>\n<|im_start|>user\n<Instruct>: {instruction}\n<Query>:"
    ),
    before_document="\n<Document>:",
    after_document="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    default_instruction=(
        "Given a web search query, retrieve relevant passages that answer the query"
    ),
)
MAX_TOKENS = 8192
ANSWERS = ("yes", "no")


@dataclass
class Qwen3Config:
    vocab_size: int = 151669
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    hidden_act: str = "silu"
    max_position_embeddings: int = 40960
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    attention_bias: bool = False
    tie_word_embeddings: bool = True
    # right padding is never read (causal attention, the last real token pooled)
    pad_token_id: int = 0
    num_labels: int = 1

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> Qwen3Config:
        config = dict(config)
        if config.get("use_sliding_window"):
            raise ValueError("Qwen3 checkpoints with use_sliding_window are not supported")
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ValueError(f"unsupported rope_type {rope.get('rope_type', rope.get('type'))!r}")
        if "rope_theta" in rope:  # transformers 5 keeps it here
            config["rope_theta"] = rope["rope_theta"]
        if config.get("pad_token_id") is None:
            config.pop("pad_token_id", None)
        # one logit: yes - no, or the conversion's one score row
        return cls(**{**config_values(cls, config), "num_labels": 1})

    @property
    def max_tokens(self) -> int:
        return min(self.max_position_embeddings, MAX_TOKENS)


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32 as Qwen3 does."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


class Qwen3Attention(nn.Module):
    def __init__(self, config: Qwen3Config):
        super().__init__()
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        dim, hidden, bias = config.head_dim, config.hidden_size, config.attention_bias
        self.q_proj = nn.Linear(hidden, self.heads * dim, bias=bias)
        self.k_proj = nn.Linear(hidden, self.kv_heads * dim, bias=bias)
        self.v_proj = nn.Linear(hidden, self.kv_heads * dim, bias=bias)
        self.o_proj = nn.Linear(self.heads * dim, hidden, bias=bias)
        self.q_norm = RMSNorm(dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(dim, config.rms_norm_eps)

    def forward(self, x, rotation, layout: TokenLayout, attention_mask, last: Tensor | None):
        """x: packed tokens (tokens, hidden). ``last``: the packed index of each row's last
        token, to compute the queries (and the output) for those alone; None for all."""
        q = self.q_norm(self.q_proj(x if last is None else x[last]).unflatten(-1, (self.heads, -1)))
        k = self.k_norm(self.k_proj(x).unflatten(-1, (self.kv_heads, -1)))
        v = self.v_proj(x).unflatten(-1, (self.kv_heads, -1))
        cos, sin = rotation
        q = rotate(q, cos, sin) if last is None else rotate(q, cos[last], sin[last])
        k = rotate(k, cos, sin)
        # grouped-query attention: each key/value head serves heads / kv_heads query heads
        k, v = (t.repeat_interleave(self.heads // self.kv_heads, dim=1) for t in (k, v))
        return self.o_proj(self.attend(q, k, v, layout, attention_mask, last).flatten(1))

    def attend(self, q, k, v, layout, attention_mask, last):
        """Causal attention, q, k, v (tokens, heads, dim); a last-token query sees its row."""

        def heads_first(t):  # (n, heads, dim) -> (1, heads, n, dim)
            return t.transpose(0, 1)[None]

        if layout.per_row:
            out, start = [], 0
            for row, n in enumerate(layout.lengths):
                keys = slice(start, start + n)
                query = q[row : row + 1] if last is not None else q[keys]
                context = F.scaled_dot_product_attention(
                    heads_first(query), heads_first(k[keys]), heads_first(v[keys]),
                    is_causal=last is None,
                )  # fmt: skip
                out.append(context[0].transpose(0, 1))
                start += n
            return torch.cat(out)
        keys, values = (layout.unpack(t).transpose(1, 2) for t in (k, v))
        if last is None:  # right padding: causal alone keeps real tokens off the padding
            context = F.scaled_dot_product_attention(
                layout.unpack(q).transpose(1, 2), keys, values, is_causal=True
            )
            return layout.pack(context.transpose(1, 2))
        # the last tokens' queries see every real key of their row
        real = attention_mask[:, None, None, :].bool()
        context = F.scaled_dot_product_attention(q[:, :, None], keys, values, attn_mask=real)
        return context[:, :, 0]


class Qwen3MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: Qwen3Config):
        super().__init__()
        hidden, inner = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen3DecoderLayer(nn.Module):
    def __init__(self, config: Qwen3Config):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Qwen3Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = Qwen3MLP(config)

    def forward(self, x, rotation, layout, attention_mask, last=None):
        residual = x if last is None else x[last]
        attended = self.self_attn(self.input_layernorm(x), rotation, layout, attention_mask, last)
        x = residual + attended
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3(nn.Module):
    """The Qwen3 decoder with a one-row ``score`` head: forward returns (batch, 1) logits."""

    prompt = PROMPT  # the Reranker formats pairs with it

    def __init__(self, config: Qwen3Config, head: bool = True):
        super().__init__()
        if not head:
            raise ValueError("Qwen3 rerankers have no bare-encoder use in crossrank")
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            Qwen3DecoderLayer(config) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.score = nn.Linear(config.hidden_size, 1, bias=False)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Logits (batch, 1) at each row's last real token; right-padded input."""
        layout = TokenLayout(attention_mask)
        if not layout.right_padded:
            raise ValueError("Qwen3 rerankers take right-padded batches (as collate builds)")
        batch, length = input_ids.shape
        positions = layout.pack(torch.arange(length, device=input_ids.device).expand(batch, -1))
        rotation = rotary(positions, self.config.rope_theta, self.config.head_dim)
        last = layout.first + attention_mask.sum(1) - 1
        x = self.embed_tokens(layout.pack(input_ids))
        for layer in self.layers[:-1]:
            x = layer(x, rotation, layout, attention_mask)
        x = self.layers[-1](
            x, rotation, layout, attention_mask, last
        )  # the last token is all the head reads
        return self.score(self.norm(x))


def answer_tokens(path: Path) -> tuple[int, int]:
    """Ids of "yes" and "no" in the checkpoint's tokenizer.json."""
    vocabulary = json.loads((path / "tokenizer.json").read_text())["model"]["vocab"]
    missing = [a for a in ANSWERS if a not in vocabulary]
    if missing:
        raise ValueError(f"{path}/tokenizer.json has no {' or '.join(map(repr, missing))} token")
    return vocabulary["yes"], vocabulary["no"]


def yes_minus_no(state: dict[str, Tensor], config: Qwen3Config, path: Path) -> dict[str, Tensor]:
    """A causal LM's head reduced to the one row the score needs: W_yes - W_no (the
    embeddings when the head is tied to them). A conversion's ``score`` row is kept."""
    if "score.weight" in state:
        return state
    head = state.pop("lm_head.weight", None)
    if head is None:
        head = state["embed_tokens.weight"]
    yes, no = answer_tokens(path)
    return {**state, "score.weight": (head[yes] - head[no])[None].clone()}
