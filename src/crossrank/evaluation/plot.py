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
