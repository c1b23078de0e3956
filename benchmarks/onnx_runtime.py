"""ONNX Runtime (ORT) as a CPU backend, against crossrank and sentence-transformers.

ORT was evaluated as a CPU backend for crossrank and not kept: on the machine it was
measured on (a CPU with AVX512-BF16), no ORT variant beat crossrank bf16 on throughput,
and ORT int8 per-tensor moved DL19 nDCG@10 too far. This script lets anyone re-measure
on their own CPU, e.g. one without AVX512-BF16 or AMX, where crossrank bf16 is slow and
ORT int8 per-channel may well win.

The checkpoint is exported to ONNX in a temporary folder (transformers, fp32, eager
attention, which ORT's fusion needs to recognise the attention pattern; opset 17, dynamic
batch and sequence axes), fused with ``onnxruntime.transformers.optimizer`` (model type
"bert") and dynamically quantised to int8 weights, per channel and per tensor.

Systems, all in one process at the same thread count (ORT: intra-op threads = --threads,
inter-op 1), interleaved query by query so that machine noise hits them alike:

- sentence-transformers ``CrossEncoder.predict`` (fp32, the baseline of the speed-ups);
- crossrank fp32 and crossrank bf16;
- ORT fp32 (fused graph), ORT int8 per-channel, ORT int8 per-tensor. The ORT scorer
  tokenises with the checkpoint's tokenizer (pairs truncated to 512 tokens) and scores
  length-sorted batches of up to 32 pairs / 4096 padded tokens, as crossrank does.

Workload: the first --queries TREC DL19 queries x their 100 BM25 candidates. Also reports
the max |logit difference| of each ORT variant against crossrank fp32 and, unless
--skip-ndcg, nDCG@10 on all 43 DL19 queries with the change against crossrank fp32.

    python benchmarks/onnx_runtime.py [--model PATH] [--queries 10] [--repeats 3]
        [--threads N] [--skip-ndcg] [--json OUT]

Needs the bench extra: pip install -e ".[bench]" (onnx, onnxruntime, transformers,
sentence-transformers).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from common import benchmark_checkpoint, dl19
from rerank_speed import (
    Scorer,
    crossrank_scorer,
    ndcg_report,
    sentence_transformers_scorer,
    time_systems,
)

MAX_LENGTH = 512
MAX_PAIRS = 32
MAX_TOKENS = 4096  # padded tokens per batch
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
BASELINE = "sentence-transformers CrossEncoder"
REFERENCE = "crossrank fp32"


def export_onnx(path: Path, folder: Path) -> dict[str, Path]:
    """Export, fuse and quantise the checkpoint: name -> ONNX file."""
    import onnxruntime.transformers.optimizer as ort_optimizer
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    # eager attention: with SDPA the exported graph has no pattern that ORT's fusion knows
    model = AutoModelForSequenceClassification.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    config = model.config
    sample = tokenizer(
        ["what is a query"] * 2,
        ["some document text here", "another document"],
        padding=True,
        return_tensors="pt",
    )
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    dynamic_axes["logits"] = {0: "batch"}
    exported = folder / "model.onnx"
    print("exporting to ONNX (fp32, opset 17) ...", flush=True)
    start = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        # the legacy exporter's deprecation notice and tracing warnings about Python-side
        # shape checks: expected here (the output is checked against crossrank below)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            tuple(sample[name] for name in INPUTS),
            str(exported),
            input_names=list(INPUTS),
            output_names=["logits"],
            dynamic_axes=dynamic_axes,
            opset_version=17,
            dynamo=False,  # the TorchScript exporter: its graph is what the fusion expects
        )
    print(f"  exported in {time.perf_counter() - start:.0f} s", flush=True)

    print("fusing (onnxruntime.transformers.optimizer, bert) ...", flush=True)
    start = time.perf_counter()
    fused = ort_optimizer.optimize_model(
        str(exported),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=1,
    )
    print(f"  fused operators: {fused.get_fused_operator_statistics()}", flush=True)
    files = {"ORT fp32 (fused)": folder / "model_fused.onnx"}
    fused.save_model_to_file(str(files["ORT fp32 (fused)"]))
    print(f"  fused in {time.perf_counter() - start:.0f} s", flush=True)

    for name, per_channel in (("ORT int8 per-channel", True), ("ORT int8 per-tensor", False)):
        print(f"quantising: {name} ...", flush=True)
        start = time.perf_counter()
        files[name] = folder / f"model_int8_{'pc' if per_channel else 'pt'}.onnx"
        quantize_dynamic(
            files["ORT fp32 (fused)"],
            files[name],
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            # the fused graph's contrib ops carry no type information for quantisation:
            # 1 = TensorProto.FLOAT
            extra_options={"DefaultTensorType": 1},
        )
        print(f"  quantised in {time.perf_counter() - start:.0f} s", flush=True)
    return files


def ort_scorer(model_file: Path, tokenizer, threads: int) -> Scorer:
    """Scores with ONNX Runtime on the CPU: length-sorted batches of up to MAX_PAIRS pairs
    and MAX_TOKENS padded tokens; logits come back in input order."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])

    def score(query: str, documents: list[str]) -> np.ndarray:
        encoded = tokenizer(
            [query] * len(documents), list(documents), truncation=True, max_length=MAX_LENGTH
        )
        ids, types = encoded["input_ids"], encoded["token_type_ids"]
        order = sorted(range(len(documents)), key=lambda i: len(ids[i]))
        logits = np.empty(len(documents), dtype=np.float32)
        start = 0
        while start < len(order):
            end = start + 1  # ascending lengths: the last pair of a batch sets its width
            while (
                end < len(order)
                and end - start < MAX_PAIRS
                and (end - start + 1) * len(ids[order[end]]) <= MAX_TOKENS
            ):
                end += 1
            batch = order[start:end]
            width = len(ids[batch[-1]])
            arrays = {name: np.zeros((len(batch), width), dtype=np.int64) for name in INPUTS}
            for row, i in enumerate(batch):
                n = len(ids[i])
                arrays["input_ids"][row, :n] = ids[i]
                arrays["token_type_ids"][row, :n] = types[i]
                arrays["attention_mask"][row, :n] = 1
            logits[batch] = session.run(["logits"], arrays)[0][:, 0]
            start = end
        return logits

    return score


def cpu_flags() -> dict[str, bool]:
    """Whether the CPU has the instructions that decide bf16 and int8 speed (Linux only)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0].split())
    except (OSError, IndexError):
        return {}
    return {f: f in flags for f in ("avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni")}


def print_table(title: str, results: dict, diffs: dict[str, float]) -> None:
    print(f"\n{title}")
    print(
        f"{'system':<36} {'pairs/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'speed-up':>9}"
        f" {'max |logit diff| vs crossrank fp32':>36}"
    )
    for name, r in results.items():
        r["speedup"] = r["pairs_per_s"] / results[BASELINE]["pairs_per_s"]
        diff = f"{diffs[name]:.2e}" if name in diffs else ""
        print(
            f"{name:<36} {r['pairs_per_s']:>9.1f} {r['p50_ms']:>8.0f} {r['p95_ms']:>8.0f}"
            f" {r['speedup']:>8.2f}x {diff:>36}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="checkpoint folder (default: the bundled model)")
    parser.add_argument("--data", help="folder holding trec-dl19/ (default: ../shared/data)")
    parser.add_argument("--queries", type=int, default=10, help="DL19 queries to time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-ndcg", action="store_true", help="skip the full-DL19 nDCG check")
    parser.add_argument("--json", help="write all figures here")
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    path, description = benchmark_checkpoint(args.model)
    flags = cpu_flags()
    print(f"checkpoint: {description} ({path})")
    print(
        f"threads: {args.threads}; torch {torch.__version__}; onnxruntime {ort.__version__};"
        f" onnx {onnx.__version__}"
    )
    print(f"CPU: {platform.processor() or platform.machine()}; {flags}")

    with tempfile.TemporaryDirectory(prefix="crossrank-onnx-") as folder:
        files = export_onnx(path, Path(folder))
        tokenizer = AutoTokenizer.from_pretrained(path)
        systems: dict[str, Scorer] = {
            BASELINE: sentence_transformers_scorer(path, "cpu"),
            REFERENCE: crossrank_scorer(path, "cpu", "float32"),
            "crossrank bf16": crossrank_scorer(path, "cpu", "bfloat16"),
        }
        for name, model_file in files.items():
            systems[name] = ort_scorer(model_file, tokenizer, args.threads)
    ort_names = list(files)

    dataset, workload = dl19(data=args.data)
    calls = [(query, texts) for _, query, _, texts in workload[: args.queries]]
    reference = [systems[REFERENCE](q, d) for q, d in calls]
    diffs = {
        name: max(
            float(np.abs(systems[name](q, d) - ref).max())
            for (q, d), ref in zip(calls, reference, strict=True)
        )
        for name in ort_names
    }

    report = {
        "checkpoint": description,
        "threads": args.threads,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "cpu_flags": flags,
        "max_abs_logit_diff_vs_crossrank_fp32": diffs,
    }
    report["A"] = time_systems(systems, calls, args.repeats, "workload A")
    title = f"Workload A: {len(calls)} DL19 queries x 100 BM25 candidates (threads: {args.threads})"
    print_table(title, report["A"], diffs)

    if not args.skip_ndcg:
        names = (REFERENCE, "crossrank bf16", *ort_names)
        report["ndcg@10"] = ndcg_report(systems, names, dataset, workload)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
