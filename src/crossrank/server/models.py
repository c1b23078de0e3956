"""The models one server serves, each a ``Service`` with its own queue and inference thread.

A request's ``model`` field picks one by name or alias; no ``model`` means the first.
A lone model answers whatever name a request gives, as text-embeddings-inference does:
gateways (LiteLLM, LangChain, Dify, Open WebUI) always send the name their user typed,
often a hosted model's ("rerank-v3.5"). The reply then names the model that answered,
and the name asked for is reported as ignored. With several models, or with
``strict_model_names``, a name not served is a 404.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from crossrank.reranker import Reranker
from crossrank.server.metrics import ServerMetrics
from crossrank.server.service import ApiError, ServerSettings, Service


@dataclass(frozen=True)
class Chosen:
    """The service that answers a request, and the name it asked for if that is not one
    served here (a lone model answering any name)."""

    service: Service
    unserved_name: str | None = None

    def warning(self) -> str | None:
        if self.unserved_name is None:
            return None
        return (
            f"model {self.unserved_name!r} is not served here; answered by "
            f"{self.service.name!r}, the only model this server serves"
        )


class ServedModels:
    def __init__(
        self, rerankers: Mapping[str, Reranker], settings: ServerSettings, metrics: ServerMetrics
    ):
        if not rerankers:
            raise ValueError("no model to serve")
        services = {
            name: Service(name, reranker, settings, metrics.for_model(name))
            for name, reranker in rerankers.items()
        }
        self.set_services(services, settings)

    def set_services(self, services: Mapping[str, Service], settings: ServerSettings) -> None:
        self.services = dict(services)
        self.default = next(iter(self.services.values()))
        self.aliases = dict(settings.model_aliases)
        for alias, name in self.aliases.items():
            if name not in self.services:
                raise ValueError(f"alias {alias!r} names {name!r}, which is not served")
        self.strict = settings.strict_model_names or len(self.services) > 1

    @property
    def answers_any_name(self) -> bool:
        return not self.strict

    @property
    def names(self) -> list[str]:
        return list(self.services)

    def choose(self, name: str | None) -> Chosen:
        """The model a request names (or its alias), or the first; a name not served is
        the lone model's unless names are strict, else a 404."""
        if name is None:
            return Chosen(self.default)
        service = self.services.get(self.aliases.get(name, name))
        if service is not None:
            return Chosen(service)
        if not self.strict:
            return Chosen(self.default, unserved_name=name)
        served = ", ".join(repr(n) for n in [*self.services, *self.aliases])
        raise ApiError(
            404,
            "model_not_found",
            f"model {name!r} is not served here; this server serves {served}",
            field="model",
        )

    def get(self, name: str | None) -> Service:
        """The service that answers a request naming ``name``."""
        return self.choose(name).service

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
