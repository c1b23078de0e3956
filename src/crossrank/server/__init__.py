"""The rerank server: Jina, Cohere and TEI rerank APIs over one batching engine.

``crossrank serve`` runs it; ``create_app(reranker, settings)`` builds the ASGI app.
"""

from crossrank.server.app import ServerSettings, create_app

__all__ = ["ServerSettings", "create_app"]
