"""BERT encoder and cross-encoder (``BertForSequenceClassification`` checkpoints).

Parameter names follow the Hugging Face layout (``embeddings.word_embeddings``,
``encoder.layer.N.attention.self.query``, ...) so that checkpoints load, and are saved,
without a renaming table. JinaBERT and XLM-RoBERTa reuse these modules and change only
what differs: the embeddings, the feed-forward block and the head.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossrank.models.attention import TokenLayout, alibi_slopes, padding_bias

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}
# activations torch._addmm_activation computes exactly on CPU: name -> its use_gelu flag
FUSED_ACTIVATIONS = {"gelu": True, "relu": False}


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0
    num_labels: int = 1

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> BertConfig:
        return cls(**config_values(cls, config))

    @property
    def max_tokens(self) -> int:
        """Longest input the position scheme allows."""
        return self.max_position_embeddings


def config_values(cls: type, config: dict[str, Any]) -> dict[str, Any]:
    """The entries of a config.json that the config dataclass ``cls`` has fields for, with
    ``num_labels`` counted from ``id2label`` when only that is given (transformers' way)."""
    names = {f.name for f in fields(cls)}
    values = {k: v for k, v in config.items() if k in names}
    if "num_labels" not in config and "id2label" in config:
        values["num_labels"] = len(config["id2label"])
    return values


class BertEmbeddings(nn.Module):
    """word + learned absolute position + token type, then LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids, attention_mask):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)[None]
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(x))


class QueryKeyValue(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x, query_rows: Tensor | None = None):
        """q, k, v of the packed tokens x (tokens, hidden); with ``query_rows`` the queries
        of those rows of x alone. Plain Linear layers run as one matrix product (quantised
        layers keep their own kernels)."""
        layers = (self.query, self.key, self.value)
        if query_rows is not None:
            q, layers = self.query(x.index_select(0, query_rows)), layers[1:]
        if all(type(layer) is nn.Linear for layer in layers):
            weight = torch.cat([layer.weight for layer in layers])
            bias = torch.cat([layer.bias for layer in layers])
            out = F.linear(x, weight, bias).chunk(len(layers), dim=-1)
        else:
            out = [layer(x) for layer in layers]
        return tuple(out) if query_rows is None else (q, *out)


class ProjectAddNorm(nn.Module):
    """LayerNorm(residual + dropout(dense(x))): the post-norm residual of BERT."""

    def __init__(self, in_features: int, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, residual):
        # in place: one (tokens, hidden) temporary fewer; the sum is the same either way round
        return self.LayerNorm(self.dropout(self.dense(x)).add_(residual))


class SelfAttention(nn.Module):
    def __init__(self, config: BertConfig, alibi: bool = False):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.dropout_p = config.attention_probs_dropout_prob
        self.self = QueryKeyValue(config)
        self.output = ProjectAddNorm(config.hidden_size, config)
        slopes = alibi_slopes(self.num_heads) if alibi else None
        self.register_buffer("alibi_slopes", slopes, persistent=False)

    def forward(self, x, bias, layout: TokenLayout, first_only: bool = False):
        """x: packed tokens (tokens, hidden). With ``first_only`` the result holds each
        row's first token alone (batch, hidden): keys and values still come from all."""
        q, k, v = self.self(x, layout.first if first_only else None)
        dropout_p = self.dropout_p if self.training else 0.0
        context = layout.attend(
            q, k, v, self.num_heads, bias, self.alibi_slopes, dropout_p, first_only
        )
        return self.output(context, layout.first_tokens(x) if first_only else x)


class Intermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACTIVATIONS[config.hidden_act]
        # the use_gelu flag of the fused form; None: this activation has none
        self.addmm_use_gelu = FUSED_ACTIVATIONS.get(config.hidden_act)

    def forward(self, x):
        if self.addmm_use_gelu is not None and can_fuse_activation(x, self.dense):
            # bias and activation applied in place on the product: on CPU the same results,
            # bit for bit, with one (tokens, intermediate) temporary fewer (docs/performance.md)
            return torch._addmm_activation(
                self.dense.bias, x, self.dense.weight.t(), use_gelu=self.addmm_use_gelu
            )
        return self.activation(self.dense(x))


def can_fuse_activation(x: Tensor, layer: nn.Module) -> bool:
    """torch's addmm+activation for inference on CPU (on CUDA its GELU is the tanh form)."""
    return (
        x.is_cpu
        and x.dim() == 2
        and type(layer) is nn.Linear
        and layer.bias is not None
        and not torch.is_grad_enabled()
    )


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = SelfAttention(config)
        self.intermediate = Intermediate(config)
        self.output = ProjectAddNorm(config.intermediate_size, config)

    def forward(self, x, bias, layout, first_only: bool = False):
        x = self.attention(x, bias, layout, first_only)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layer = nn.ModuleList(layers)


class Pooler(nn.Module):
    """tanh(dense(first token))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden):
        return torch.tanh(self.dense(hidden[:, 0]))


class Bert(nn.Module):
    """BERT encoder; with ``head=True`` a cross-encoder whose forward returns logits.

    ``encode`` returns the last hidden states (used for dense retrieval embeddings).
    """

    def __init__(self, config: BertConfig, head: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = self.make_embeddings(config)
        self.encoder = Encoder([self.make_layer(config) for _ in range(config.num_hidden_layers)])
        if head:
            self.make_head(config)

    def make_embeddings(self, config):
        return BertEmbeddings(config)

    def make_layer(self, config):
        return BertLayer(config)

    def make_head(self, config):
        self.pooler = Pooler(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def classify(self, hidden):
        return self.classifier(self.dropout(self.pooler(hidden)))

    def encode(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None = None,
        first_only: bool = False,
    ) -> Tensor:
        """Last hidden states (batch, length, hidden), zeros at the padding; with
        ``first_only`` those of each row's first token alone, (batch, 1, hidden), which the
        last layer then computes for that token only (what a cross-encoder's head reads)."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids, attention_mask)
        layout = TokenLayout(attention_mask)
        bias = None if layout.per_row else padding_bias(attention_mask, x.dtype)
        shortcut = first_only and layout.right_padded
        x = layout.pack(x)
        last = len(self.encoder.layer) - 1
        for number, layer in enumerate(self.encoder.layer):
            x = layer(x, bias, layout, shortcut and number == last)
        if shortcut:
            return x[:, None]
        return layout.unpack(x)[:, :1] if first_only else layout.unpack(x)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Logits of shape (batch, num_labels)."""
        return self.classify(self.encode(input_ids, attention_mask, token_type_ids, True))
