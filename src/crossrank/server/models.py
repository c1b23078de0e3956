"""The models one server serves, each a ``Service`` with its own queue and inference thread.

A request's ``model`` field picks one by name; no ``model`` means the first.
"""

from __future__ import annotations

from collections.abc import Mapping

from crossrank.reranker import Reranker
from crossrank.server.metrics import ServerMetrics
from crossrank.server.service import ApiError, ServerSettings, Service


class ServedModels:
    def __init__(
        self, rerankers: Mapping[str, Reranker], settings: ServerSettings, metrics: ServerMetrics
    ):
        if not rerankers:
            raise ValueError("no model to serve")
        self.services = {
            name: Service(name, reranker, settings, metrics.for_model(name))
            for name, reranker in rerankers.items()
        }
        self.default = next(iter(self.services.values()))

    @property
    def names(self) -> list[str]:
        return list(self.services)

    def get(self, name: str | None) -> Service:
        """The model a request names, or the first; a name not served is a 404."""
        if name is None:
            return self.default
        service = self.services.get(name)
        if service is None:
            served = ", ".join(repr(n) for n in self.services)
            raise ApiError(
                404,
                "model_not_found",
                f"model {name!r} is not served here; this server serves {served}",
                field="model",
            )
        return service

    def start(self) -> None:
        for service in self.services.values():
            service.batcher.start()
            if service.watchdog is not None:  # on the event loop: it fails its requests
                service.watchdog.start()

    def stop(self) -> None:
        """Finish every queue (each model's thread drains its own)."""
        for service in self.services.values():
            service.batcher.stop()
            if service.watchdog is not None:
                service.watchdog.stop()
