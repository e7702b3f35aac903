"""``python -m simulations.centralized``: PEMN's representation-capacity experiment, centralized.

PEMN (Bai et al., NeurIPS 2022, arXiv 2210.06699, Fig. 3) asks how few *distinct random
numbers* a network needs before a learned binary mask can no longer make it fit a task. This
script answers it for one dataset and model, with no federation in the way:

* ``dense-trained``: the ordinary dense network, weights learned by SGD. The reference line.
* ``mask/<strategy>``: the same architecture with frozen random weights built from a
  prototype (``pemn_fl.prototype``); only a top-``keep`` mask per layer is learned
  (edge-popup scores). Prototypes, from most to fewest random numbers: ``dense`` (every
  layer its own tensor), ``one-layer`` (equal shapes share a tensor), ``mp`` (the largest
  layer's tensor, truncated for the others) and ``rp:RATIO`` (one vector of
  ``max(1, ceil(RATIO * largest layer))`` values tiled over every layer).
* ``mp`` and ``rp`` run twice: ``rescale=True`` scales each layer by its own He std (ours);
  ``rescale=False`` copies the largest layer's scale everywhere, PEMN's exact behaviour. For
  ``dense`` and ``one-layer`` the flag changes nothing, so they run once (``rescale`` = n/a).

How to read ``results/capacity/<dataset>-<model>.csv`` and the bar chart next to it:

* ``prototype_values``: random floats the prototype holds (what a party would otherwise have to
  store); ``masked_params``: edges under a mask (one bit each). ``compression`` =
  ``masked_params*32 / (prototype_values*32 + masked_params)``: bits of the dense float model
  over bits of prototype + mask. For ``dense-trained`` it is 1 by definition (its
  ``prototype_values`` are its trained weights, it has no mask).
* ``test_accuracy`` is after the last epoch, ``best_test_accuracy`` the best epoch's. A
  strategy "keeps the capacity" while its bar stays close to ``mask/dense``; the gap to the
  dashed ``dense-trained`` line is the price of learning only a mask.

Training: SGD with momentum 0.9 and a per-epoch cosine learning rate (``--schedule``); each
epoch is one ``pemn_fl.task.train`` call, so the momentum buffer restarts every epoch. Every
run is seeded: the prototype and score init come from ``--seed`` (``seed_scores``), the dense
model's init from ``torch.manual_seed(--seed)``, and the batch order of epoch ``e`` from
``--seed + e`` (the same for every variant). Runs on one CPU thread (``--threads``).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch

from pemn_fl.data import DataError, Dataset, load_dataset
from pemn_fl.masked import masked_layers
from pemn_fl.models import (
    ModelError,
    apply_prototype,
    build_model,
    count_params,
    layer_shapes,
    seed_scores,
)
from pemn_fl.prototype import (
    INITS,
    PrototypeSpec,
    PrototypeSpecError,
    parse_strategy,
    prototype_length,
)
from pemn_fl.task import TrainConfig, evaluate, train

DEFAULT_STRATEGIES = "dense,one-layer,mp,rp:1e-1,rp:1e-2,rp:1e-3,rp:1e-4"
SCHEDULES = ("cosine", "constant")
COLUMNS = (
    "variant", "strategy", "rescale", "init", "prototype_values", "masked_params",
    "compression", "test_accuracy", "best_test_accuracy", "epochs", "train_seconds",
)  # fmt: skip
NO_RESCALE_EFFECT = ("dense", "one-layer")  # equal fan-ins (or own tensors): flag is a no-op


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one ``error: ...`` line (exit 2), not usage + error."""

    def error(self, message: str) -> NoReturn:
        fail(message)


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m simulations.centralized",
        description="PEMN's capacity experiment: mask over each prototype vs a trained dense net.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--dataset",
        default="fashion-mnist",
        help="digits, fashion-mnist, mnist, cifar10, synthetic",
    )
    p.add_argument("--data-dir", default="", help="directory holding the dataset files")
    p.add_argument("--model", default="conv2", help="mlp, conv2, conv4, conv6, resnet20")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier")
    p.add_argument("--epochs", type=int, default=3,
                   help="training epochs of every variant")
    p.add_argument("--batch-size", type=int, default=64,
                   help="batch size (at least 2: BatchNorm uses batch statistics)")
    p.add_argument(
        "--lr",
        type=float,
        default=0.2,
        help="score learning rate (masked models); 0.1-0.4 were within a point of each other "
        "after one epoch of fashion-mnist/conv2, 0.05 was worse",
    )
    p.add_argument("--dense-lr", type=float, default=0.05, help="weight lr (dense-trained)")
    p.add_argument(
        "--schedule", default="cosine", help="per-epoch learning rate: cosine (to 0) or constant"
    )
    p.add_argument("--keep", type=float, default=0.5, help="fraction of edges kept per layer")
    p.add_argument("--init", default="signed-constant", help="signed-constant or kaiming-normal")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the prototypes, the scores, the subset and the batch order")
    p.add_argument(
        "--train-subset",
        type=int,
        default=0,
        help="train on the first N samples after a seeded shuffle (0 = all)",
    )
    p.add_argument(
        "--strategies",
        default=DEFAULT_STRATEGIES,
        help="comma list of prototypes to mask over (dense-trained always runs)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=Path("results/capacity"), help="output directory")
    return p  # fmt: skip


@dataclass(frozen=True)
class Variant:
    """One bar of the chart: the trained dense net, or a mask over one prototype."""

    strategy: str  # "dense-trained" or a prototype strategy
    rescale: bool | None  # None: not applicable

    @property
    def trained(self) -> bool:
        return self.strategy == "dense-trained"

    @property
    def name(self) -> str:
        if self.trained:
            return "dense-trained"
        if self.rescale is None:
            return f"mask/{self.strategy}"
        return f"mask/{self.strategy}/{'rescale' if self.rescale else 'no-rescale'}"


def parse_strategies(text: str) -> list[str]:
    """Validate the comma list; raises PrototypeSpecError / ValueError with a clear message."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ValueError(f"--strategies {text!r}: give at least one of {DEFAULT_STRATEGIES}")
    for item in items:
        parse_strategy(item)
    dupes = sorted({s for s in items if items.count(s) > 1})
    if dupes:
        raise ValueError(f"--strategies lists {', '.join(dupes)} more than once")
    return items


def variants_for(strategies: Sequence[str]) -> list[Variant]:
    out = [Variant("dense-trained", None)]
    for s in strategies:
        if parse_strategy(s)[0] in NO_RESCALE_EFFECT:
            out.append(Variant(s, None))
        else:
            out += [Variant(s, True), Variant(s, False)]
    return out


def validate(args: argparse.Namespace) -> None:
    if args.init not in INITS:
        raise ValueError(f"--init {args.init!r}: use one of {', '.join(INITS)}")
    if args.schedule not in SCHEDULES:
        raise ValueError(f"--schedule {args.schedule!r}: use one of {', '.join(SCHEDULES)}")
    for name in ("epochs", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.batch_size < 2:
        raise ValueError(f"--batch-size must be >= 2 (batch-statistics BN), got {args.batch_size}")
    for name in ("width", "lr", "dense_lr"):
        value = getattr(args, name)
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    if not 0.0 < args.keep < 1.0:
        raise ValueError(f"--keep must be in (0, 1), got {args.keep}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.train_subset < 0:
        raise ValueError(f"--train-subset must be >= 0 (0 = all), got {args.train_subset}")


def training_arrays(data: Dataset, subset: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All training data, or its first ``subset`` samples after a seeded shuffle."""
    if subset == 0 or subset >= len(data.y_train):
        return data.x_train, data.y_train
    order = np.random.default_rng(seed).permutation(len(data.y_train))[:subset]
    order.sort()  # keep file order inside the subset; the batch shuffle happens in train()
    return data.x_train[order], data.y_train[order]


def epoch_lr(base: float, epoch: int, epochs: int, schedule: str) -> float:
    """Per-epoch cosine from ``base`` (epoch 0) towards 0, or constant."""
    if schedule == "constant":
        return base
    return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def build_variant(variant: Variant, data: Dataset, args: argparse.Namespace) -> torch.nn.Module:
    if variant.trained:
        torch.manual_seed(args.seed)
        return build_model(args.model, data.input_shape, data.num_classes, masked=False,
                           width=args.width)  # fmt: skip
    model = build_model(args.model, data.input_shape, data.num_classes, masked=True,
                        width=args.width, keep=args.keep)  # fmt: skip
    spec = PrototypeSpec(
        seed=args.seed, strategy=variant.strategy, init=args.init,
        rescale=True if variant.rescale is None else variant.rescale,
    )  # fmt: skip
    apply_prototype(model, spec)
    seed_scores(model, args.seed)
    return model


def run_variant(
    variant: Variant, data: Dataset, x: np.ndarray, y: np.ndarray, args: argparse.Namespace
) -> dict[str, object]:
    model = build_variant(variant, data, args)
    if variant.trained:
        values, masked, compression = count_params(model), 0, 1.0
    else:
        shapes = layer_shapes(model)
        spec = PrototypeSpec(seed=args.seed, strategy=variant.strategy, init=args.init)
        values = prototype_length(spec, shapes)
        masked = sum(layer.numel for layer in shapes)
        compression = masked * 32 / (values * 32 + masked)
    base_lr = args.dense_lr if variant.trained else args.lr
    accs: list[float] = []
    seconds = 0.0
    for epoch in range(args.epochs):
        cfg = TrainConfig(epochs=1, batch_size=args.batch_size,
                          lr=epoch_lr(base_lr, epoch, args.epochs, args.schedule))  # fmt: skip
        start = time.perf_counter()
        loss = train(model, x, y, cfg, seed=args.seed + epoch)
        seconds += time.perf_counter() - start
        _, acc = evaluate(model, data.x_test, data.y_test)
        accs.append(acc)
        print(f"  {variant.name:<26} epoch {epoch + 1}/{args.epochs}  loss {loss:.4f}  "
              f"test {acc:.4f}  ({seconds:.0f} s)", flush=True)  # fmt: skip
    return {
        "variant": variant.name,
        "strategy": variant.strategy,
        "rescale": "n/a" if variant.rescale is None else str(variant.rescale),
        "init": "pytorch-default" if variant.trained else args.init,
        "prototype_values": values,
        "masked_params": masked,
        "compression": f"{compression:.2f}",
        "test_accuracy": f"{accs[-1]:.4f}",
        "best_test_accuracy": f"{max(accs):.4f}",
        "epochs": args.epochs,
        "train_seconds": f"{seconds:.1f}",
    }


def write_csv(rows: list[dict[str, object]], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def format_table(rows: list[dict[str, object]]) -> str:
    cells = [list(COLUMNS)] + [[str(r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(rows: list[dict[str, object]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    masked_rows = [r for r in rows if r["variant"] != "dense-trained"]
    strategies = list(dict.fromkeys(str(r["strategy"]) for r in masked_rows))
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.38
    colors = {"True": "tab:blue", "False": "tab:orange", "n/a": "tab:gray"}
    labels = {"True": "per-layer rescale (ours)", "False": "no rescale (PEMN)",
              "n/a": "rescale has no effect"}  # fmt: skip
    used: set[str] = set()
    accs = [float(r["test_accuracy"]) for r in rows]
    for i, strategy in enumerate(strategies):
        group = [r for r in masked_rows if r["strategy"] == strategy]
        offsets = [0.0] if len(group) == 1 else [-width / 2, width / 2]
        for r, off in zip(group, offsets, strict=True):
            key = str(r["rescale"])
            acc = float(r["test_accuracy"])
            ax.bar(i + off, acc, width, color=colors[key],
                   label=None if key in used else labels[key])  # fmt: skip
            used.add(key)
            ax.text(
                i + off,
                acc - 0.004,
                f"{acc:.3f}",
                ha="center",
                va="top",
                fontsize=10,
                color="white",
                fontweight="bold",
            )
    trained = next(r for r in rows if r["variant"] == "dense-trained")
    ref = float(trained["test_accuracy"])
    ax.axhline(ref, color="black", linestyle="--", linewidth=1.5,
               label=f"dense-trained ({ref:.3f})")  # fmt: skip
    ticks = []
    for s in strategies:
        values = next(int(r["prototype_values"]) for r in masked_rows if r["strategy"] == s)
        ticks.append(f"{s}\n{values:,} values")
    ax.set_xticks(range(len(strategies)), ticks, fontsize=11)
    low = max(0.0, min(accs) - 0.08)
    ax.set_ylim(low, min(1.0, max(accs)) + 0.07)  # headroom for the legend
    ax.set_ylabel("test accuracy", fontsize=12)
    ax.set_xlabel("prototype (random values it holds)", fontsize=12)
    ax.set_title(title, fontsize=12)
    ax.tick_params(axis="y", labelsize=11)
    ax.legend(fontsize=11, loc="upper center", ncol=2, framealpha=0.95)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        validate(args)
        strategies = parse_strategies(args.strategies)
        torch.set_num_threads(args.threads)
        data = load_dataset(args.dataset, args.data_dir or None, seed=args.seed)
        # Build once up front so a model/input mismatch fails before any training.
        probe = build_model(
            args.model, data.input_shape, data.num_classes, width=args.width, keep=args.keep
        )
    except (PrototypeSpecError, DataError, ModelError, ValueError) as exc:
        fail(str(exc))
    x, y = training_arrays(data, args.train_subset, args.seed)
    variants = variants_for(strategies)
    print(f"{data.name} / {args.model} width {args.width}: {len(y)} training samples, "
          f"{len(data.y_test)} test, {len(variants)} variants, {args.epochs} epoch(s)",
          flush=True)  # fmt: skip
    rows = [run_variant(v, data, x, y, args) for v in variants]

    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{data.name}-{args.model}"
    csv_path, png_path = args.out / f"{stem}.csv", args.out / f"{stem}.png"
    write_csv(rows, csv_path)
    n_masked = len(masked_layers(probe))
    title = (
        f"{data.name}, {args.model} (width {args.width}, {n_masked} masked layers), "
        f"keep {args.keep}, {args.init}, {args.epochs} epoch(s), {len(y)} train samples"
    )
    plot(rows, png_path, title)  # fmt: skip
    print()
    print(format_table(rows))
    print(f"\nwrote {csv_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
