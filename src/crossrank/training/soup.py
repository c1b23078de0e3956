"""Average the weights of fine-tuned checkpoints (a uniform "model soup").

Runs that continue the same weights with different seeds stay in one loss basin, and the
mean of their weights often ranks better than any one of them (Wortsman et al., 2022, "Model
soups"). Whether it does here is measured, not assumed: ``--dev`` scores every ingredient and
the soup on the dev sets that ``crossrank train`` selects checkpoints on.

    python -m crossrank.training.soup RUN_A RUN_B --out DIR \\
        --dev ../shared/data/msmarco-dev600:dev@20,../shared/data/trec-dl21:train@50

The ingredients must share one architecture and be raw training outputs (no folded
calibration, or the same one): a calibrated head would be averaged with an uncalibrated one.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from crossrank.engine.tokenization import load_tokenizer
from crossrank.training.calibrate import CALIBRATION_KEY
from crossrank.training.data import BeirSet, load_beir, parse_depth_spec
from crossrank.training.train import TOKENIZER_FILES, evaluate, init_model

log = logging.getLogger(__name__)


def average_checkpoints(folders: list[Path], out: Path) -> Path:
    """Write the element-wise mean of the folders' weights (in the first one's dtype) to OUT."""
    configs = [json.loads((f / "config.json").read_text()) for f in folders]
    if len({json.dumps(c.get(CALIBRATION_KEY)) for c in configs}) > 1:
        raise ValueError("the checkpoints carry different folded calibrations; average raw runs")
    states = [load_file(f / "model.safetensors") for f in folders]
    keys = set(states[0])
    for folder, state in zip(folders[1:], states[1:], strict=True):
        if set(state) != keys or any(state[k].shape != states[0][k].shape for k in keys):
            raise ValueError(f"{folder} does not have the weights of {folders[0]}")
    mean = {
        k: (sum(s[k].float() for s in states) / len(states)).to(states[0][k].dtype)
        for k in sorted(keys)
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file(mean, out / "model.safetensors", metadata={"format": "pt"})
    shutil.copyfile(folders[0] / "config.json", out / "config.json")
    for name in TOKENIZER_FILES:
        if (folders[0] / name).is_file():
            shutil.copyfile(folders[0] / name, out / name)
    return out


def dev_scores(folder: Path, dev_sets: list[BeirSet], max_length: int) -> dict[str, dict]:
    """The dev metrics ``crossrank train`` selects on, for one checkpoint folder."""
    return evaluate(init_model(folder), load_tokenizer(folder), dev_sets, max_length)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="checkpoint folders to average")
    parser.add_argument("--out", type=Path, required=True, help="folder for the averaged model")
    parser.add_argument(
        "--dev", default="", help="comma-separated DIR[:split][@depth] sets to score each on"
    )
    parser.add_argument(
        "--dev-max-length", type=int, default=160, help="input length in tokens on dev"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    average_checkpoints(args.runs, args.out)
    specs = [s for s in args.dev.split(",") if s]
    if not specs:
        return
    dev_sets = [load_beir(*parse_depth_spec(spec, "dev")) for spec in specs]  # read once
    report = {}
    for folder in [*args.runs, args.out]:
        scores = dev_scores(folder, dev_sets, args.dev_max_length)
        mean = sum(s["ndcg@10"] for s in scores.values()) / len(scores)
        report[str(folder)] = {"dev": scores, "mean_ndcg@10": mean}
        log.info("%s: mean nDCG@10 %.4f %s", folder, mean, scores)
    (args.out / "soup.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
