"""A grouped bar chart of metric values: one group per metric, one bar per system."""

from __future__ import annotations

from pathlib import Path


def plot_metrics(results: dict[str, dict[str, float]], path: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    systems = list(results)
    metrics = list(next(iter(results.values())))
    width = 0.8 / len(systems)
    figure, axes = plt.subplots(figsize=(1.2 * len(metrics) + 2, 4))
    for i, system in enumerate(systems):
        positions = [m + (i - (len(systems) - 1) / 2) * width for m in range(len(metrics))]
        values = [results[system][metric] for metric in metrics]
        bars = axes.bar(positions, values, width, label=system)
        axes.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
    axes.set_xticks(range(len(metrics)), metrics)
    axes.set_ylim(0, 1.1)
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)


def plot_quality_cost(results, path: str | Path) -> None:
    """nDCG@10 against the tokens the cross-encoder read and against rerank CPU time:
    one colour per long-document set, one marker per mode (truncate / chunk / select)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_tokens, by_time) = plt.subplots(1, 2, figsize=(11, 4.2))
    markers = {"truncate": "s", "chunk": "o", "select": "^"}
    long_sets = [r for r in results if r.long]
    for colour, result in enumerate(long_sets):
        rows = [s for s in result.systems if s.system == "cross-encoder"]
        for axis, cost in ((by_tokens, "tokens"), (by_time, "cpu_seconds")):
            for row in rows:
                point = (getattr(row, cost), row.ndcg10)
                axis.scatter(*point, color=f"C{colour}", marker=markers[row.mode.split()[0]])
                axis.annotate(
                    row.mode, point, fontsize=6, xytext=(3, 3), textcoords="offset points"
                )
            label = f"{result.name} ({result.queries} q, top-{result.top_k})"
            axis.scatter([], [], color=f"C{colour}", label=label)
    for axis, label in (
        (by_tokens, "tokens read by the cross-encoder"),
        (by_time, "rerank stage CPU seconds"),
    ):
        axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.set_ylabel("nDCG@10")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(
        "Long documents, cross-encoder: quality against cost (square truncate, circle chunk = "
        "every window, triangle select = BM25-best windows)",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)


def plot_depths(rows, first_stage: float, path: str | Path, title: str) -> None:
    """nDCG@10 (left axis) and rerank time (right axis) against reranking depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, quality = plt.subplots(figsize=(6, 4))
    depths = [r.depth for r in rows]
    quality.plot(depths, [r.ndcg10 for r in rows], marker="o", color="C0", label="nDCG@10")
    quality.axhline(first_stage, color="C0", linestyle=":", label="first stage nDCG@10")
    quality.set_xscale("log")
    quality.set_xticks(depths, [str(d) for d in depths])
    quality.set_xlabel("candidates reranked per query")
    quality.set_ylabel("nDCG@10", color="C0")
    time_axis = quality.twinx()
    time_axis.plot(depths, [r.seconds for r in rows], marker="s", color="C1", label="seconds")
    time_axis.set_ylabel("rerank seconds (all queries)", color="C1")
    handles = quality.get_legend_handles_labels()[0] + time_axis.get_legend_handles_labels()[0]
    quality.legend(handles=handles, fontsize=8, loc="center right")
    quality.set_title(title, fontsize=10)
    quality.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
