"""``crossrank index`` and ``crossrank search``: the two-stage pipeline from the shell."""

from __future__ import annotations

import argparse
import json


def index_command(args: argparse.Namespace) -> None:
    from crossrank.retrieval.documents import read_documents
    from crossrank.retrieval.embeddings import Embedder
    from crossrank.retrieval.store import Store

    documents = read_documents(args.documents)
    embedder = Embedder(args.embedder, device=args.device)
    store = Store(args.store, embedder, chunk_tokens=args.chunk_tokens, overlap=args.overlap)
    stats = store.index(documents, prune=args.prune, progress=True)
    print(f"{args.store}: {stats}; {len(store)} chunks in the store")


def search_command(args: argparse.Namespace) -> None:
    from crossrank.pipeline import Pipeline

    pipeline = Pipeline.open(
        args.store,
        model=args.model,
        rerank=not args.no_rerank,
        device=args.device,
        long_documents=args.long_documents,
    )
    results = pipeline.search(
        args.query, top_k=args.top_k, candidates=args.candidates, per_document=not args.chunks
    )
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False))
        return
    if not results:
        print("no results")
    for rank, r in enumerate(results, 1):
        title = f" — {r.title}" if r.title and r.title != r.doc_id else ""
        print(f"{rank:>2}. {r.score:.4f}  {r.doc_id}{title}  [chunk {r.chunk}]")
        print(f"    {r.snippet}")


def add_index_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "index",
        help="chunk, embed and store documents for `crossrank search`",
        description="Build or update a LanceDB store (text, metadata, vectors, BM25 index). "
        "Re-indexing updates changed documents and skips unchanged ones.",
    )
    parser.add_argument(
        "documents", help="a folder of .txt/.md files, or a .jsonl with id, title, text"
    )
    parser.add_argument("--store", required=True, help="store folder (created if missing)")
    parser.add_argument(
        "--prune", action="store_true", help="remove documents of the store not given now"
    )
    parser.add_argument("--embedder", default=None, help="embedding model (default: MiniLM-L6)")
    parser.add_argument("--chunk-tokens", type=int, default=200, help="tokens per chunk")
    parser.add_argument("--overlap", type=int, default=40, help="tokens shared by neighbours")
    parser.add_argument("--device", default=None)
    parser.set_defaults(func=index_command)


def add_search_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "search",
        help="hybrid retrieval from a store, then reranking",
        description="Vector + BM25 candidates fused with reciprocal-rank fusion, reranked "
        "by the cross-encoder; prints scores and snippets.",
    )
    parser.add_argument("query")
    parser.add_argument("--store", required=True)
    parser.add_argument("--top-k", "-k", type=int, default=10, help="results to show")
    parser.add_argument("--candidates", type=int, default=100, help="chunks reranked")
    parser.add_argument(
        "--model", "-m", default=None, help="reranker (default: the package's default model)"
    )
    parser.add_argument("--no-rerank", action="store_true", help="first stage only")
    parser.add_argument("--chunks", action="store_true", help="allow several chunks per document")
    parser.add_argument("--long-documents", choices=["truncate", "chunk"], default=None)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--device", default=None)
    parser.set_defaults(func=search_command)
