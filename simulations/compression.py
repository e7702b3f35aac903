"""``python -m simulations.compression``: PEMN's compression result (paper section 4, Fig. 4).

PEMN's second claim: a network stored as one short random vector (an ``rp`` prototype) plus
1-bit masks beats conventional pruning at the same storage, most of all at extreme
compression. This script measures it for one dataset and model, centralized:

* ``pemn``: masks learned (edge-popup, top-``keep`` per layer) over a frozen ``rp:RATIO``
  prototype, one run per ratio. Stored: the prototype's random vector as float32 plus the
  mask through the project's codec (``codec.encode_mask``, 1 bit per weight).
* ``dense``: the same architecture trained normally; stored as float32 weights.
* ``magnitude-pruning``: that dense network, globally magnitude-pruned to the number of
  weights whose storage matches each PEMN point, then fine-tuned with the pruning mask fixed
  (``torch.nn.utils.prune``). Stored: the surviving float32 values plus their positions,
  coded by the same codec as a sparse delta against the all-zero mask (or packed, when
  smaller): the index cost a real sparse format pays.
* ``random-pruning``: the same, with the surviving positions drawn at random (seeded).

Every size is the length of the bytes actually serialised (``storage_bytes`` = prototype or
value bytes + mask or index bytes), not a formula. The number of surviving weights for a
pruned point is the largest whose serialised size fits the PEMN point's storage. The models
here have no biases and non-affine BatchNorm, so the masked or pruned weights are all their
parameters. A PEMN prototype can also be regenerated from its 8-byte seed, which would make
PEMN's storage the mask alone; the paper (and this table) count the vector.

Training reuses the capacity experiment's loop (``simulations.centralized``): SGD with
momentum 0.9, per-epoch cosine learning rate, seeded batch order, one thread.

Writes ``<out>/<dataset>-<model>.csv`` and ``.png`` (accuracy against storage bytes, log x).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from pemn_fl.codec import encode_mask
from pemn_fl.data import DataError, Dataset, load_dataset
from pemn_fl.masked import get_masks, masked_layers
from pemn_fl.models import ModelError, apply_prototype, build_model, layer_shapes, seed_scores
from pemn_fl.prototype import PrototypeSpec, PrototypeSpecError, prototype_length
from pemn_fl.task import TrainConfig, evaluate, train
from simulations.centralized import epoch_lr, training_arrays

COLUMNS = ("method", "setting", "storage_bytes", "value_bytes", "index_bytes", "kept_weights",
           "total_weights", "test_accuracy", "train_seconds")  # fmt: skip
FINGERPRINT = "0" * 16  # the codec's frame wants one; storage here has no peer to check it


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulations.compression",
                                description=__doc__.split("\n\n")[0])  # fmt: skip
    p.add_argument("--dataset", default="fashion-mnist",
                   help="digits, fashion-mnist, mnist, cifar10, synthetic")
    p.add_argument("--data-dir", default="",
                   help="directory holding the dataset files")
    p.add_argument("--model", default="conv2",
                   help="mlp, conv2, conv4, conv6, resnet20")
    p.add_argument("--width", type=float, default=0.5,
                   help="width multiplier")
    p.add_argument("--ratios", default="1e-1,1e-2,1e-3,1e-4",
                   help="rp prototype ratios for the PEMN points (comma list)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=3,
                   help="training epochs of the PEMN masks and the dense network")
    p.add_argument("--finetune-epochs", type=int, default=1,
                   help="fine-tuning epochs of each pruned network")
    p.add_argument("--train-subset", type=int, default=15000, help="0 = all training samples")
    p.add_argument("--batch-size", type=int, default=64,
                   help="batch size")
    p.add_argument("--lr", type=float, default=0.2, help="score lr (PEMN)")
    p.add_argument("--dense-lr", type=float, default=0.05,
                   help="weight learning rate of the dense network")
    p.add_argument("--finetune-lr", type=float, default=0.01,
                   help="weight learning rate of the pruned networks' fine-tuning")
    p.add_argument("--keep", type=float, default=0.5,
                   help="fraction of each layer's edges a PEMN mask keeps")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the prototypes, scores, batch order and random pruning")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads")
    p.add_argument("--out", type=Path, default=Path("results/compression"),
                   help="output directory")
    return p


def _train(model: nn.Module, data: Dataset, x: np.ndarray, y: np.ndarray, epochs: int,
           lr: float, seed: int, label: str) -> tuple[float, float]:  # fmt: skip
    """Train ``epochs`` with a cosine lr; return (final test accuracy, training seconds)."""
    seconds, acc = 0.0, float("nan")
    for epoch in range(epochs):
        cfg = TrainConfig(epochs=1, batch_size=64, lr=epoch_lr(lr, epoch, epochs, "cosine"))
        start = time.perf_counter()
        loss = train(model, x, y, cfg, seed=seed + epoch)
        seconds += time.perf_counter() - start
        _, acc = evaluate(model, data.x_test, data.y_test)
        print(f"  {label:<34} epoch {epoch + 1}/{epochs}  loss {loss:.4f}  test {acc:.4f}",
              flush=True)  # fmt: skip
    return acc, seconds


def pemn_point(ratio: str, data: Dataset, x: np.ndarray, y: np.ndarray,
               args: argparse.Namespace) -> dict[str, object]:  # fmt: skip
    """Masks over an ``rp:ratio`` prototype; stored = the random vector + the coded mask."""
    spec = PrototypeSpec(seed=args.seed, strategy=f"rp:{ratio}", init="signed-constant")
    model = build_model(args.model, data.input_shape, data.num_classes, masked=True,
                        width=args.width, keep=args.keep)  # fmt: skip
    apply_prototype(model, spec)
    seed_scores(model, args.seed)
    acc, seconds = _train(model, data, x, y, args.epochs, args.lr, args.seed, f"pemn rp:{ratio}")
    shapes = layer_shapes(model)
    length = prototype_length(spec, shapes)
    # The stored vector: the first `length` values of the largest layer (the tiled vector,
    # times a per-layer scale computed from shapes, which costs no storage).
    largest = max(masked_layers(model), key=lambda item: item[1].weight.numel())[1]
    vector = largest.weight.detach().reshape(-1)[:length].numpy().astype(np.float32).tobytes()
    masks = [m.detach().reshape(-1).numpy().astype(bool) for m in get_masks(model)]
    mask_bytes = len(encode_mask(masks, fingerprint=FINGERPRINT))
    total = sum(s.numel for s in shapes)
    return {"method": "pemn", "setting": f"rp:{ratio}",
            "storage_bytes": len(vector) + mask_bytes, "value_bytes": len(vector),
            "index_bytes": mask_bytes, "kept_weights": int(sum(m.sum() for m in masks)),
            "total_weights": total, "test_accuracy": acc, "train_seconds": seconds}  # fmt: skip


def _prunable(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def sparse_size(weights: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> tuple[int, int]:
    """(value bytes, index bytes) of a pruned model, serialised: its surviving weights as
    float32 and their positions coded by the mask codec against the all-zero mask."""
    zeros = [np.zeros_like(m) for m in masks]
    index = encode_mask(list(masks), fingerprint=FINGERPRINT, reference=zeros, reference_id=0)
    values = np.concatenate([w[m] for w, m in zip(weights, masks, strict=True)])
    return len(values.astype(np.float32).tobytes()), len(index)


def _masks_keeping(order: np.ndarray, k: int, sizes: Sequence[int]) -> list[np.ndarray]:
    flat = np.zeros(int(sum(sizes)), dtype=bool)
    flat[order[:k]] = True
    return list(np.split(flat, np.cumsum(sizes)[:-1]))


def matched_k(order: np.ndarray, weights: Sequence[np.ndarray], budget: int) -> int:
    """The most surviving weights whose serialised size fits ``budget`` (binary search)."""
    sizes = [w.size for w in weights]
    lo, hi = 0, len(order)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        values, index = sparse_size(weights, _masks_keeping(order, mid, sizes))
        if values + index <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def pruned_point(kind: str, dense_state: dict[str, torch.Tensor], budget: int, label: str,
                 data: Dataset, x: np.ndarray, y: np.ndarray,
                 args: argparse.Namespace) -> dict[str, object]:  # fmt: skip
    """The trained dense network pruned to ``budget`` bytes (magnitude or random), fine-tuned."""
    torch.manual_seed(args.seed)
    model = build_model(args.model, data.input_shape, data.num_classes, masked=False,
                        width=args.width)  # fmt: skip
    model.load_state_dict(dense_state)
    layers = _prunable(model)
    weights = [m.weight.detach().reshape(-1).numpy() for m in layers]
    sizes = [w.size for w in weights]
    if kind == "magnitude-pruning":
        order = np.argsort(-np.abs(np.concatenate(weights)), kind="stable")
    else:
        order = np.random.default_rng(args.seed).permutation(int(sum(sizes)))
    k = matched_k(order, weights, budget)
    masks = _masks_keeping(order, k, sizes)
    values, index = sparse_size(weights, masks)
    for module, mask in zip(layers, masks, strict=True):
        keep = torch.from_numpy(mask.reshape(module.weight.shape).astype(np.float32))
        prune.custom_from_mask(module, "weight", keep)
    _, acc_before = evaluate(model, data.x_test, data.y_test)
    acc, seconds = _train(model, data, x, y, args.finetune_epochs, args.finetune_lr,
                          args.seed + 100, f"{kind} to {label}")  # fmt: skip
    return {"method": kind, "setting": f"{label} (before fine-tune {acc_before:.4f})",
            "storage_bytes": values + index, "value_bytes": values, "index_bytes": index,
            "kept_weights": k, "total_weights": int(sum(sizes)), "test_accuracy": acc,
            "train_seconds": seconds}  # fmt: skip


def plot(rows: list[dict[str, object]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"pemn": "o-", "magnitude-pruning": "s--", "random-pruning": "^:", "dense": "k*"}
    for method, style in styles.items():
        part = sorted((r for r in rows if r["method"] == method),
                      key=lambda r: int(r["storage_bytes"]))  # fmt: skip
        if part:
            ax.plot([int(r["storage_bytes"]) for r in part],
                    [float(r["test_accuracy"]) for r in part], style, label=method,
                    markersize=9 if method == "dense" else 6)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("storage (bytes, serialised; log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        ratios = [r.strip() for r in args.ratios.split(",") if r.strip()]
        for r in ratios:
            PrototypeSpec(seed=args.seed, strategy=f"rp:{r}", init="signed-constant")
        if min(args.epochs, args.finetune_epochs) < 1 or not 0 < args.keep < 1:
            raise ValueError("--epochs and --finetune-epochs must be >= 1, --keep in (0, 1)")
        data = load_dataset(args.dataset, args.data_dir or None, seed=args.seed)
        build_model(args.model, data.input_shape, data.num_classes, masked=False,
                    width=args.width)  # fmt: skip
        args.out.mkdir(parents=True, exist_ok=True)
    except (PrototypeSpecError, DataError, ModelError, ValueError, OSError) as exc:
        return _fail(str(exc))
    torch.set_num_threads(args.threads)
    x, y = training_arrays(data, args.train_subset, args.seed)
    rows = [pemn_point(r, data, x, y, args) for r in ratios]
    torch.manual_seed(args.seed)
    dense = build_model(args.model, data.input_shape, data.num_classes, masked=False,
                        width=args.width)  # fmt: skip
    acc, seconds = _train(dense, data, x, y, args.epochs, args.dense_lr, args.seed, "dense")
    weights = [m.weight.detach().numpy().astype(np.float32) for m in _prunable(dense)]
    stored = len(b"".join(w.tobytes() for w in weights))
    rows.append({"method": "dense", "setting": "float32", "storage_bytes": stored,
                 "value_bytes": stored, "index_bytes": 0,
                 "kept_weights": int(sum(w.size for w in weights)),
                 "total_weights": int(sum(w.size for w in weights)), "test_accuracy": acc,
                 "train_seconds": seconds})  # fmt: skip
    state = {k: v.clone() for k, v in dense.state_dict().items()}
    for point in [r for r in rows if r["method"] == "pemn"]:
        for kind in ("magnitude-pruning", "random-pruning"):
            rows.append(pruned_point(kind, state, int(point["storage_bytes"]),
                                     str(point["setting"]), data, x, y, args))  # fmt: skip
    name = f"{args.dataset}-{args.model}"
    with (args.out / f"{name}.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v)
                             for k, v in r.items()})  # fmt: skip
    plot(rows, args.out / f"{name}.png", f"{args.dataset} / {args.model} (width {args.width:g})")
    for r in rows:
        size, kept = int(r["storage_bytes"]), int(r["kept_weights"])
        print(f"{r['method']:<18} {str(r['setting']):<38} {size:>10,} B  kept {kept:>9,}  "
              f"acc {float(r['test_accuracy']):.4f}")
    print(f"results in {args.out}/ ({name}.csv, {name}.png)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
