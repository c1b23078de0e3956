"""``crossrank serve``: load one model and serve it over HTTP."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from crossrank.arguments import add_runtime_options, apply_threads, positive

API_KEY_ENV = "CROSSRANK_API_KEY"
DEFAULT_MODEL_NAME = "crossrank-default"


def model_name(model: str | None) -> str:
    """What /v1/models and responses call the model: a hub id as given, a folder by name."""
    if model is None:
        return DEFAULT_MODEL_NAME
    path = Path(model).expanduser()
    return path.resolve().name if path.is_dir() else model


def serve_command(args: argparse.Namespace) -> None:
    import uvicorn

    from crossrank import Reranker
    from crossrank.server.app import create_app
    from crossrank.server.service import ServerSettings

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # An empty variable counts as unset, so `CROSSRANK_API_KEY= crossrank serve` is open.
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    settings = ServerSettings(
        model_name=model_name(args.model),
        api_key=api_key,
        max_documents=args.max_documents,
        max_request_tokens=args.max_request_tokens,
        max_request_chars=args.max_request_chars,
        max_body_bytes=args.max_body_bytes,
        max_queue=args.max_queue,
        cors_origins=tuple(args.cors_origin),
    )
    apply_threads(args)
    try:
        reranker = Reranker.from_pretrained(
            args.model,
            device=args.device,
            dtype=args.dtype,
            max_length=args.max_length,
            long_documents=args.long_documents,
            max_batch_tokens=args.max_batch_tokens,
        )
    except FileNotFoundError as error:
        if args.model is not None:
            raise
        raise SystemExit(
            "crossrank serve: this installation has no default model; serve a checkpoint "
            f"with --model PATH|HUB_ID\n({error})"
        ) from None
    app = create_app(reranker, settings)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        logging.getLogger("crossrank.server").warning(
            "listening on %s without an API key: anyone who can reach it can use it", args.host
        )
    # SIGTERM and Ctrl-C: uvicorn stops accepting, waits for in-flight requests, then
    # the app's shutdown finishes the queue and stops the inference thread.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,  # the app logs each request with its id, and never its headers
        timeout_graceful_shutdown=args.drain_timeout,
    )


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a reranker over HTTP (Jina, Cohere v1/v2 and TEI rerank APIs)",
        description=(
            "Serve a reranker over HTTP. POST /v1/rerank (Jina, Cohere v1), /v2/rerank "
            "(Cohere v2), /rerank (TEI); GET /health, /v1/models, /metrics, /docs."
        ),
    )
    parser.add_argument(
        "--model",
        "-m",
        default=None,
        help="checkpoint folder or hub id (default: the bundled model)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer KEY' on every route but /health "
        f"(prefer the {API_KEY_ENV} variable: arguments show in the process list)",
    )
    parser.add_argument(
        "--max-batch-tokens",
        type=positive,
        default=8192,
        help="tokens per model call, across requests (default: 8192)",
    )
    parser.add_argument(
        "--max-documents", type=positive, default=1000, help="documents per request (default: 1000)"
    )
    parser.add_argument(
        "--max-queue",
        type=positive,
        default=256,
        help="requests admitted at once; more get 429 (default: 256)",
    )
    parser.add_argument(
        "--max-request-tokens",
        type=positive,
        default=1_048_576,
        help="tokens one request may ask the model to read (default: 1048576)",
    )
    parser.add_argument(
        "--max-request-chars",
        type=positive,
        default=4 * 1024 * 1024,
        help="characters in one request's query and documents, refused before tokenizing "
        "(default: 4194304)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=positive,
        default=16 * 1024 * 1024,
        help="request body size (default: 16 MiB)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="allow browser calls from this origin (repeatable; default: CORS off)",
    )
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--long-documents", choices=["truncate", "chunk"], default=None)
    add_runtime_options(parser)
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        help="seconds to wait for in-flight requests on SIGTERM (default: no limit)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    parser.set_defaults(func=serve_command)
