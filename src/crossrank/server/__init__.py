"""The rerank server: the Jina, Cohere, TEI, vLLM, Infinity and Together rerank APIs over
one batching engine per model, and a playground page.

``crossrank serve`` runs it; ``create_app(reranker_or_models, settings)`` builds the ASGI
app (``models`` a ``{name: Reranker}`` mapping, the first the default).
"""

from crossrank.server.app import create_app
from crossrank.server.service import ServerSettings

__all__ = ["ServerSettings", "create_app"]
