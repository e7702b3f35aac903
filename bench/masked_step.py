"""What a masked training step costs against a dense one: ``python -m bench.masked_step``.

One SGD step (batch 32, forward + backward + update, 1 thread) of the same architecture,
(a) dense, as FedAvg trains it, and (b) masked, as a PEMN-FL client trains its scores
(the top-k mask is recomputed on every forward pass). Steps alternate between the two in
one loop, so both see the same machine state; the table reports medians and their ratio.
Target (method-zoo issue): a masked step costs at most 2x the dense step.

A third column times the per-layer threshold alone, with the two exact implementations
``masked.topk_mask`` could use: ``torch.kthvalue`` (the first version) and numpy's
``np.partition`` (introselect), which find the same k-th value.

Writes ``results/bench/masked_step.csv``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from bench.common import add_csv_out, bench_parser, write_table
from pemn_fl import networks as N
from pemn_fl.config import RunSettings
from pemn_fl.masked import masked_layers, num_kept

CASES = {
    "digits mlp (classroom)": RunSettings(dataset="digits", model="mlp"),
    "fashion-mnist conv2 w0.25 (reference)": RunSettings(
        dataset="fashion-mnist", model="conv2", width=0.25, options={"dense-width": 0.25}
    ),
}


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
          y: torch.Tensor) -> None:  # fmt: skip
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def _timed(fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(settings: RunSettings, steps: int, batch: int = 32) -> dict[str, float]:
    data = N.dataset_of(settings)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(data.y_train), size=batch, replace=False)
    x = torch.from_numpy(np.ascontiguousarray(data.x_train[idx], dtype=np.float32))
    y = torch.from_numpy(data.y_train[idx].astype(np.int64))
    dense = N.dense_model(settings)
    masked, _ = N.masked_model(settings)
    opt_d = torch.optim.SGD(dense.parameters(), lr=0.01, momentum=0.9)
    opt_m = torch.optim.SGD([p for p in masked.parameters() if p.requires_grad], lr=0.1,
                            momentum=0.9)  # fmt: skip
    dense.train()
    masked.train()
    layers = [layer for _, layer in masked_layers(masked)]
    t_dense, t_masked, t_kth, t_part = [], [], [], []
    for i in range(steps + 5):
        d = _timed(lambda: _step(dense, opt_d, x, y))
        m = _timed(lambda: _step(masked, opt_m, x, y))

        def kth() -> None:
            for layer in layers:
                flat = layer.scores.detach().abs().flatten()
                torch.kthvalue(flat, flat.numel() - num_kept(flat.numel(), layer.keep) + 1)

        def part() -> None:
            for layer in layers:
                flat = layer.scores.detach().abs().flatten()
                n = flat.numel()
                np.partition(flat.numpy(), n - num_kept(n, layer.keep))

        k, p = _timed(kth), _timed(part)
        if i >= 5:  # warm-up steps are not counted
            t_dense.append(d)
            t_masked.append(m)
            t_kth.append(k)
            t_part.append(p)
    med = {name: float(np.median(v)) * 1e3 for name, v in
           (("dense_ms", t_dense), ("masked_ms", t_masked), ("threshold_kthvalue_ms", t_kth),
            ("threshold_partition_ms", t_part))}  # fmt: skip
    med["masked_over_dense"] = med["masked_ms"] / med["dense_ms"]
    return med


def build_parser() -> argparse.ArgumentParser:
    p = bench_parser("bench.masked_step", __doc__)
    p.add_argument("--steps", type=int, default=200, help="timed steps per case (medians)")
    add_csv_out(p, Path("results/bench/masked_step.csv"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    rows = [{"case": name, **measure(settings, args.steps)} for name, settings in CASES.items()]
    write_table(pd.DataFrame(rows), args.out, width=200)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
