"""Draw ``bench/model_bench.py``'s JSON as a PNG: tokens/s per contender, per model.

    python bench/plot.py bench/results/model_cpu.json bench/results/model_cpu.png

Bars are median tokens/s (real tokens); each is labelled with its speed relative to
transformers called in input order with padding.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402


def plot(results: dict, target: Path) -> None:
    models = list(results["models"])
    env = results["environment"]
    figure, axes = plt.subplots(1, len(models), figsize=(7.5 * len(models), 4.8), squeeze=False)
    for axis, model in zip(axes[0], models):
        entry = results["models"][model]
        timings = entry["timings"]
        base = next(t for t in timings if t["name"] == (entry["input_order"] or entry["ours"]))["tokens_per_second"]
        names = [t["name"] for t in timings]
        speeds = [t["tokens_per_second"] for t in timings]
        colours = ["#1f77b4" if n.startswith("ours") else "#ff7f0e" if n == entry["sorted_best"] else "#9e9e9e"
                   for n in names]
        bars = axis.barh(range(len(names)), speeds, color=colours)
        for bar, speed in zip(bars, speeds):
            axis.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {speed:,.0f}  ({speed / base:.2f}x)",
                      va="center", fontsize=8)
        axis.set_yticks(range(len(names)), names, fontsize=8)
        axis.invert_yaxis()
        axis.set_xlim(0, max(speeds) * 1.35)
        axis.set_xlabel("tokens / s (real tokens, median of runs)")
        axis.set_title(f"{model}: {results['texts']} texts, {results['dtype']}", fontsize=10)
    where = env.get("gpu") or f"{env['processor']}, {env['threads']} threads"
    figure.suptitle(f"Model stage vs references on {env['device']} ({where})\n"
                    f"(x = speed relative to transformers called in input order with padding)", fontsize=10)
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=110)
    print(f"wrote {target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="JSON written by bench/model_bench.py")
    parser.add_argument("png", type=Path, help="PNG to write")
    args = parser.parse_args(argv)
    plot(json.loads(args.results.read_text()), args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
