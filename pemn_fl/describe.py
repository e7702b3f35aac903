"""Anatomy of a PEMN model: what a seed + a mask replaces (``python -m pemn_fl describe``).

The first thing a teacher shows: how many parameters the network has, how many random
numbers its prototype really holds, and what it costs to store or send each part.
"""

from __future__ import annotations

from pemn_fl.codec import encode_mask
from pemn_fl.config import check_model_size
from pemn_fl.data import INPUT_SHAPES, NUM_CLASSES, DataError
from pemn_fl.masked import get_masks
from pemn_fl.models import MODELS, apply_prototype, build_model, count_params, layer_shapes
from pemn_fl.prototype import PrototypeSpec, prototype_length

KEYS = (
    "params", "masked_params", "prototype_values", "prototype_float_bytes", "spec_bytes",
    "mask_bytes", "fingerprint",
)  # fmt: skip


def anatomy(
    model: str, dataset: str, spec: PrototypeSpec, *, width: float = 1.0, keep: float = 0.5,
    data_dir: str | None = None,
) -> dict[str, object]:  # fmt: skip
    """The numbers of ``describe``, measured on the built model and a real encoded mask.

    Only the input shape is needed, and it is known without the dataset's files
    (``data.INPUT_SHAPES``), so a model is described where its data is not installed.
    ``data_dir`` is accepted for the command line's sake and not read."""
    if dataset not in INPUT_SHAPES:
        raise DataError(f"unknown dataset {dataset!r}: use one of {', '.join(INPUT_SHAPES)}")
    if model in MODELS:  # an unknown one is build_model's error, which names the valid ones
        # simulations.run's size bound (a SettingsError): --width 1e12 allocated until
        # torch failed, --width 50 asked 1.3 GB for one tensor.
        check_model_size(model, dataset, "width", width)
    shape, classes = INPUT_SHAPES[dataset], NUM_CLASSES
    net = build_model(model, shape, classes, width=width, keep=keep)
    fp = apply_prototype(net, spec)
    shapes = layer_shapes(net)
    values = prototype_length(spec, shapes)
    mask = [m.numpy() for m in get_masks(net)]
    dense = build_model(model, shape, classes, masked=False, width=width)
    return {
        "params": count_params(dense),
        "masked_params": sum(s.numel for s in shapes),
        "prototype_values": values,
        "prototype_float_bytes": 4 * values,
        "spec_bytes": len(spec.to_json().encode()),
        "mask_bytes": len(encode_mask(mask, fingerprint=fp, encoding="packed")),
        "fingerprint": fp,
    }


def table(info: dict[str, object], spec: PrototypeSpec) -> str:
    rows = [
        ("parameters (dense model)", f"{info['params']:,}"),
        ("masked parameters (1 bit each)", f"{info['masked_params']:,}"),
        (f"prototype values ({spec.strategy})", f"{info['prototype_values']:,}"),
        ("prototype as float32", f"{info['prototype_float_bytes']:,} B"),
        ("prototype as its spec", f"{info['spec_bytes']:,} B  {spec.to_json()}"),
        ("one packed mask (with header)", f"{info['mask_bytes']:,} B"),
        ("dense weights as float32", f"{4 * int(info['params']):,} B"),
        ("fingerprint", str(info["fingerprint"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
