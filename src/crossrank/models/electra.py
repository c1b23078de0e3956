"""ELECTRA cross-encoders (``ElectraForSequenceClassification``, e.g. ms-marco-electra-base).

An ELECTRA discriminator is BERT with two differences: the embeddings may be narrower than
the hidden states (``embedding_size``; a linear ``embeddings_project`` widens them), and the
classification head reads the first token through dense → GELU → out_proj, with no pooler.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch.nn.functional as F
from torch import nn

from crossrank.models.bert import Bert, BertConfig, BertEmbeddings
from crossrank.models.roberta import ClassificationHead


@dataclass
class ElectraConfig(BertConfig):
    # defaults are transformers' ElectraConfig, for config.json files that omit a key
    embedding_size: int = 128
    hidden_size: int = 256
    num_attention_heads: int = 4
    intermediate_size: int = 1024


class ElectraEmbeddings(BertEmbeddings):
    """BERT's embeddings, at ``embedding_size`` wide (their LayerNorm too)."""

    def __init__(self, config: ElectraConfig):
        super().__init__(replace(config, hidden_size=config.embedding_size))


class ElectraClassificationHead(ClassificationHead):
    """out_proj(GELU(dense(first token))): the exact GELU whatever ``hidden_act`` says."""

    def forward(self, hidden):
        x = F.gelu(self.dense(self.dropout(hidden[:, 0])))
        return self.out_proj(self.dropout(x))


class Electra(Bert):
    def make_embeddings(self, config):
        embeddings = ElectraEmbeddings(config)
        if config.embedding_size != config.hidden_size:
            # transformers keeps the projection beside the embeddings, not inside them; a
            # forward hook applies it to their output (a bound method: deepcopy-safe)
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)
            embeddings.register_forward_hook(self.project_embeddings)
        return embeddings

    def project_embeddings(self, _module, _inputs, embedded):
        return self.embeddings_project(embedded)

    def make_head(self, config):
        self.classifier = ElectraClassificationHead(config)

    def classify(self, hidden):
        return self.classifier(hidden)
