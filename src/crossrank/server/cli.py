"""``crossrank serve``: load one model or several and serve them over HTTP."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from crossrank.arguments import add_runtime_options, apply_threads, positive
from crossrank.server.ray_cli import add_ray_options, check_ray_options, serve_command_on_ray
from crossrank.server.service import DEFAULT_MODEL_NAME

API_KEY_ENV = "CROSSRANK_API_KEY"


def model_name(model: str | None) -> str:
    """What /v1/models and responses call the model: a hub id as given, a folder by name."""
    if model is None:
        return DEFAULT_MODEL_NAME
    path = Path(model).expanduser()
    return path.resolve().name if path.is_dir() else model


def model_specs(values: list[str]) -> tuple[list[tuple[str, str | None]], dict[str, str]]:
    """``--model`` values as (name, path or hub id) and the aliases {alias: name}:
    ``NAME[,ALIAS...]=PATH`` names a model, a bare ``PATH`` is named by ``model_name``; none
    means the bundled model."""
    if not values:
        return [(model_name(None), None)], {}
    specs: list[tuple[str, str | None]] = []
    aliases: dict[str, str] = {}
    for value in values:
        names, equals, where = value.partition("=")
        if not equals or Path(value).expanduser().exists():  # a path that holds "="
            names, where = model_name(value), value
        name, *extra = [n.strip() for n in names.split(",")]
        if not all([name, *extra]) or not where:
            raise SystemExit(
                f"crossrank serve: --model {value!r}: expected NAME[,ALIAS...]=PATH or PATH"
            )
        for taken in [name, *extra]:
            if taken in aliases or taken in dict(specs) or [name, *extra].count(taken) > 1:
                raise SystemExit(f"crossrank serve: two models are named {taken!r}")
        specs.append((name, where))
        aliases.update(dict.fromkeys(extra, name))
    clash = next((a for a in aliases if a in dict(specs)), None)
    if clash is not None:
        raise SystemExit(f"crossrank serve: two models are named {clash!r}")
    return specs, aliases


def off_if_zero(value: float | None) -> float | None:
    """0 on the command line turns a limit off (None in ServerSettings)."""
    return value or None


def guard_settings(args: argparse.Namespace) -> dict[str, object]:
    """The ServerSettings for slow senders, admission by tokens and the watchdog."""
    per_client = off_if_zero(args.max_connections_per_client)
    return {
        "max_queue_tokens": args.max_queue_tokens,
        "max_queue_wait_s": off_if_zero(args.max_queue_wait),
        "header_timeout_s": off_if_zero(args.header_timeout),
        "body_timeout_s": off_if_zero(args.body_timeout),
        "max_connections_per_client": None if per_client is None else int(per_client),
        "call_timeout_s": off_if_zero(args.call_timeout),
        "call_timeout_per_1k_tokens_s": args.call_timeout_per_1k_tokens,
        "hung_exit_grace_s": args.hung_exit_grace,
    }


def non_negative(value: str) -> float:
    number = float(value)
    if not number >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return number


def add_guard_options(parser: argparse.ArgumentParser) -> None:
    """Slow senders, admission by work, hung model calls (docs/reliability.md)."""
    parser.add_argument(
        "--max-queue-tokens",
        type=positive,
        default=4 * 1_048_576,
        help="tokens of work admitted at once; a request that needs more than this gets 413, "
        "one that must wait 429 with Retry-After (default: 4194304)",
    )
    parser.add_argument(
        "--max-queue-wait",
        type=non_negative,
        default=30.0,
        help="seconds a request may be expected to wait before the model starts on it, from "
        "the work ahead at the measured throughput; longer gets 429 at once with Retry-After; "
        "0: no limit (default: 30, under common client timeouts)",
    )
    parser.add_argument(
        "--header-timeout",
        type=non_negative,
        default=10.0,
        help="seconds for a request's headers to arrive, else 408 and closed; 0: no limit "
        "(default: 10)",
    )
    parser.add_argument(
        "--body-timeout",
        type=non_negative,
        default=60.0,
        help="seconds for a whole request body to arrive, else 408; 0: no limit (default: 60)",
    )
    parser.add_argument(
        "--max-connections-per-client",
        type=non_negative,
        default=64,
        help="open connections per client address, more get 429 and are closed; behind a "
        "proxy every client has its address, so raise it or 0 for no limit (default: 64)",
    )
    parser.add_argument(
        "--call-timeout",
        type=non_negative,
        default=60.0,
        help="seconds a model call may take (plus --call-timeout-per-1k-tokens) before the "
        "server reports itself unhealthy (/health 503); 0: no watchdog (default: 60)",
    )
    parser.add_argument(
        "--call-timeout-per-1k-tokens",
        type=non_negative,
        default=10.0,
        help="seconds added to the model call's deadline per 1,000 tokens in it (default: 10)",
    )
    parser.add_argument(
        "--hung-exit-grace",
        type=non_negative,
        default=30.0,
        help="seconds past its deadline after which a model call that has not returned ends "
        "the process with status 70, for its supervisor to restart (default: 30)",
    )


def serve_command(args: argparse.Namespace) -> None:
    import uvicorn

    from crossrank import Reranker
    from crossrank.server.app import create_app
    from crossrank.server.guards import guarded_protocol
    from crossrank.server.service import ServerSettings

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # An empty variable counts as unset, so `CROSSRANK_API_KEY= crossrank serve` is open.
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    check_ray_options(args)
    specs, aliases = model_specs(args.model)
    settings = ServerSettings(
        model_name=specs[0][0],
        model_aliases=tuple(aliases.items()),
        strict_model_names=args.strict_model_names,
        api_key=api_key,
        max_documents=args.max_documents,
        max_request_tokens=args.max_request_tokens,
        max_request_chars=args.max_request_chars,
        max_body_bytes=args.max_body_bytes,
        max_queue=args.max_queue,
        cors_origins=tuple(args.cors_origin),
        **guard_settings(args),
    )
    if args.ray:  # replicas on Ray Serve, each loading the models itself
        return serve_command_on_ray(args, specs, settings)
    apply_threads(args)
    rerankers = {}
    for name, where in specs:
        try:
            rerankers[name] = Reranker.from_pretrained(
                where,
                device=args.device,
                dtype=args.dtype,
                trust_remote_code=args.trust_remote_code,
                activation=args.activation,
                max_length=args.max_length,
                long_documents=args.long_documents,
                max_batch_tokens=args.max_batch_tokens,
            )
        except FileNotFoundError as error:
            if where is not None:
                raise
            raise SystemExit(
                "crossrank serve: this installation has no default model; serve a checkpoint "
                f"with --model PATH|HUB_ID\n({error})"
            ) from None
    app = create_app(rerankers, settings)
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
        # uvicorn's h11 protocol with deadlines for slow senders (see guards.py).
        http=guarded_protocol(settings.header_timeout_s, settings.max_connections_per_client),
    )


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve rerankers over HTTP (Jina, Cohere, TEI, vLLM, Infinity, Together APIs)",
        description=(
            "Serve rerankers over HTTP. POST /v1/rerank (Jina, Cohere v1), /v2/rerank "
            "(Cohere v2), /rerank (TEI; vLLM, Infinity, Together), /score (vLLM); "
            "GET / (playground), /health, /v1/models, /metrics, /docs."
        ),
    )
    parser.add_argument(
        "--model",
        "-m",
        action="append",
        default=[],
        metavar="[NAME[,ALIAS...]=]PATH",
        help="checkpoint folder or hub id, optionally named (and given aliases) for the "
        "request's `model` field; repeatable, the first is the default (default: the bundled "
        "model). A lone model answers requests naming any model",
    )
    parser.add_argument(
        "--strict-model-names",
        action="store_true",
        help="a lone model answers only its own name and aliases; other names get 404 (the "
        "rule with several models)",
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
    add_guard_options(parser)
    add_ray_options(parser)
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
