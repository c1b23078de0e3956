"""crossrank: self-hostable cross-encoder reranking."""

from crossrank.reranker import Reranker, RerankResult

__all__ = ["RerankResult", "Reranker"]
__version__ = "0.1.0"
