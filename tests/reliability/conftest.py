"""The server test helpers (real servers on free loopback ports, tiny random checkpoints)."""

from __future__ import annotations

# Imported so that pytest registers them here too; `server` is tests/server, importable
# because tests/ is on the path of every test package below it.
from server.conftest import reranker, server  # noqa: F401
