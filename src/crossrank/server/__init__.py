"""The rerank server: Jina, Cohere and TEI rerank APIs over one batching engine.

``crossrank serve`` runs it; ``create_app(reranker, settings)`` builds the ASGI app.
"""

from crossrank.server.app import create_app
from crossrank.server.service import ServerSettings

__all__ = ["ServerSettings", "create_app"]
