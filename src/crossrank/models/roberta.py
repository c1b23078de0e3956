"""XLM-RoBERTa / RoBERTa cross-encoders (e.g. bge-reranker-base).

The encoder layers are BERT's; what differs is the position ids (counted from
``padding_idx + 1`` over non-padding tokens only) and the classification head, which
reads the first token through dense → tanh → out_proj with no pooler.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from crossrank.models.bert import Bert, BertConfig, BertEmbeddings


@dataclass
class RobertaConfig(BertConfig):
    vocab_size: int = 250002
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1

    @property
    def max_tokens(self) -> int:
        return self.max_position_embeddings - self.pad_token_id - 1


class RobertaEmbeddings(BertEmbeddings):
    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id

    def forward(self, input_ids, token_type_ids, attention_mask):
        not_pad = (input_ids != self.padding_idx).long()
        positions = torch.cumsum(not_pad, dim=1) * not_pad + self.padding_idx
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(x))


class ClassificationHead(nn.Module):
    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden):
        x = torch.tanh(self.dense(self.dropout(hidden[:, 0])))
        return self.out_proj(self.dropout(x))


class Roberta(Bert):
    def make_embeddings(self, config):
        return RobertaEmbeddings(config)

    def make_head(self, config):
        self.classifier = ClassificationHead(config)

    def classify(self, hidden):
        return self.classifier(hidden)
