"""A real server as ``crossrank serve`` runs it: uvicorn with the guarded h11 protocol."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from crossrank import Reranker
from server.conftest import ServerUrl, running


def guarded_running(
    models: Reranker | Mapping[str, Reranker], **settings
) -> contextlib.AbstractContextManager[ServerUrl]:
    """``server.conftest.running`` with the header deadline and connection cap."""
    return running(models, guarded=True, **settings)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> tuple[bytes, bool]:
    """What the server sends until it closes the connection, and whether it closed it
    within ``timeout`` seconds."""
    data = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                data += chunk
    except TimeoutError:
        return data, False
    except ConnectionError:
        pass  # a reset is a close too
    return data, True
