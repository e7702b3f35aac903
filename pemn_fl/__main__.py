"""``python -m pemn_fl describe ...``: the command-line face of the library."""

from __future__ import annotations

import argparse
import json
import sys

from pemn_fl.data import DATASETS, DataError
from pemn_fl.models import MODELS, ModelError
from pemn_fl.prototype import INITS, PrototypeSpec, PrototypeSpecError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pemn_fl")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("describe", help="anatomy of a masked model over a prototype")
    d.add_argument("--model", default="conv4", help=", ".join(MODELS))
    d.add_argument("--dataset", default="digits", help=", ".join(DATASETS))
    d.add_argument("--data-dir", default=None)
    d.add_argument("--prototype", default="dense", help="dense, one-layer, mp, rp:RATIO")
    d.add_argument("--init", default="signed-constant", help=", ".join(INITS))
    d.add_argument("--no-rescale", action="store_true")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--width", type=float, default=1.0)
    d.add_argument("--keep", type=float, default=0.5)
    d.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    args = parser.parse_args(argv)

    from pemn_fl.describe import anatomy, table

    try:
        if not 0.0 < args.keep < 1.0:
            raise ValueError(f"keep={args.keep!r}: the kept fraction must be in (0, 1), as "
                             "for simulations.run")  # fmt: skip
        spec = PrototypeSpec(
            seed=args.seed, strategy=args.prototype, init=args.init, rescale=not args.no_rescale
        )
        info = anatomy(args.model, args.dataset, spec, width=args.width, keep=args.keep,
                       data_dir=args.data_dir)  # fmt: skip
    except (PrototypeSpecError, DataError, ModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info) if args.json else table(info, spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
