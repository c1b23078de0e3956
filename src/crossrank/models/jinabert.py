"""JinaBERT: the architecture of the jina-reranker-v1 and jina-embeddings-v2 families.

BERT with two changes that allow 8K-token inputs: no position embeddings (positions
enter as an ALiBi bias on the attention scores, see ``attention.py``) and a gated
feed-forward (GEGLU, or ReGLU) in place of BERT's intermediate/output pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from crossrank.models.bert import Bert, BertConfig, SelfAttention


@dataclass
class JinaBertConfig(BertConfig):
    max_position_embeddings: int = 8192
    position_embedding_type: str = "alibi"
    feed_forward_type: str = "geglu"


class JinaBertEmbeddings(nn.Module):
    """word + token type, then LayerNorm; no position embeddings."""

    def __init__(self, config: JinaBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids, attention_mask):
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class GatedFeedForward(nn.Module):
    """LayerNorm(x + wo(act(x W_gate) * (x W_up))), W_gate and W_up stacked in gated_layers."""

    def __init__(self, config: JinaBertConfig):
        super().__init__()
        if config.feed_forward_type not in ("geglu", "reglu"):
            raise ValueError(
                f"unsupported feed_forward_type {config.feed_forward_type!r}: "
                "JinaBERT checkpoints use 'geglu' or 'reglu'"
            )
        self.intermediate_size = config.intermediate_size
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.activation = F.gelu if config.feed_forward_type == "geglu" else F.relu
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x):
        gate, up = self.gated_layers(x).split(self.intermediate_size, dim=-1)
        return self.layernorm(x + self.wo(self.dropout(self.activation(gate) * up)))


class JinaBertLayer(nn.Module):
    def __init__(self, config: JinaBertConfig):
        super().__init__()
        self.attention = SelfAttention(config, alibi=True)
        self.mlp = GatedFeedForward(config)

    def forward(self, x, bias, layout, first_only: bool = False):
        return self.mlp(self.attention(x, bias, layout, first_only))


class JinaBert(Bert):
    """JinaBERT encoder; with ``head=True`` the cross-encoder (pooler + classifier)."""

    def make_embeddings(self, config):
        return JinaBertEmbeddings(config)

    def make_layer(self, config):
        return JinaBertLayer(config)
