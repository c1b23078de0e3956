"""``crossrank serve --ray``: the options, and the command that runs the server on Ray Serve.

Kept apart from ``ray_serve.py`` so that ``crossrank serve`` without ``--ray`` never
imports Ray (a single-process server starts without it, and without it installed).
"""

from __future__ import annotations

import argparse
import math

from crossrank.server.service import ServerSettings


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Ray Serve", "replicas on Ray Serve (pip install 'crossrank[serve]'; docs/scale-out.md)"
    )
    group.add_argument(
        "--ray",
        action="store_true",
        help="serve on Ray Serve: model replicas that Ray routes to, health-checks and replaces",
    )
    group.add_argument(
        "--ray-address",
        default=None,
        metavar="auto|HOST:PORT",
        help="a running Ray cluster (default: start a local Ray instance)",
    )
    scale = group.add_mutually_exclusive_group()
    scale.add_argument("--replicas", type=int, default=None, help="model replicas (default: 1)")
    scale.add_argument(
        "--autoscale",
        default=None,
        metavar="MIN:MAX",
        help="scale between MIN and MAX model replicas on queued requests",
    )
    group.add_argument(
        "--cpus-per-replica",
        type=float,
        default=1,
        help="CPUs Ray reserves for each model replica, and its torch threads (default: 1)",
    )
    group.add_argument(
        "--gpus-per-replica", type=float, default=0, help="GPUs for each model replica (default: 0)"
    )


def check_ray_options(args: argparse.Namespace) -> None:
    """Refuse Ray options given without --ray, and nonsense ones, before anything loads."""
    given = [
        name
        for name, value in [
            ("--ray-address", args.ray_address),
            ("--replicas", args.replicas),
            ("--autoscale", args.autoscale),
        ]
        if value is not None
    ]
    if given and not args.ray:
        raise SystemExit(f"crossrank serve: {', '.join(given)} needs --ray")
    if args.replicas is not None and args.replicas < 1:
        raise SystemExit(f"crossrank serve: --replicas must be at least 1, not {args.replicas}")
    if args.cpus_per_replica <= 0 or args.gpus_per_replica < 0:
        raise SystemExit("crossrank serve: --cpus-per-replica must be > 0, --gpus-per-replica >= 0")


def serve_command_on_ray(
    args: argparse.Namespace, specs: list[tuple[str, str | None]], settings: ServerSettings
) -> None:
    try:
        from crossrank.server import ray_serve
    except ImportError as error:
        raise SystemExit(
            f"crossrank serve --ray needs Ray Serve: pip install 'crossrank[serve]' ({error})"
        ) from None
    try:
        autoscale = ray_serve.parse_autoscale(args.autoscale) if args.autoscale else None
    except ValueError as error:
        raise SystemExit(f"crossrank serve: --autoscale: {error}") from None
    replicas = args.replicas or 1
    application = ray_serve.rerank_app(
        specs,
        settings,
        replicas=replicas,
        autoscale=autoscale,
        cpus_per_replica=args.cpus_per_replica,
        gpus_per_replica=args.gpus_per_replica,
        graceful_shutdown_timeout_s=args.drain_timeout or ray_serve.GRACEFUL_SHUTDOWN_TIMEOUT_S,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        activation=args.activation,
        max_length=args.max_length,
        long_documents=args.long_documents,
        max_batch_tokens=args.max_batch_tokens,
    )
    least = autoscale[0] if autoscale else replicas
    ray_serve.serve_on_ray(
        application,
        args.host,
        args.port,
        args.ray_address,
        cpus_needed=math.ceil(least * args.cpus_per_replica),
    )
