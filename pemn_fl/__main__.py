"""``python -m pemn_fl describe|export|evaluate|options ...``: the command-line face of the
library (``options --write`` writes docs/options.md and pyproject.toml's run config)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from pemn_fl.data import DATASETS, DataError
from pemn_fl.models import MODELS, ModelError
from pemn_fl.prototype import INITS, PrototypeSpec, PrototypeSpecError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pemn_fl")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("describe", help="anatomy of a masked model over a prototype")
    d.add_argument("--model", default="conv4", help=", ".join(MODELS))
    d.add_argument("--dataset", default="digits", help=", ".join(DATASETS))
    d.add_argument("--data-dir", default=None,
                   help="directory holding the dataset files")
    d.add_argument("--prototype", default="dense", help="dense, one-layer, mp, rp:RATIO")
    d.add_argument("--init", default="signed-constant", help=", ".join(INITS))
    d.add_argument("--no-rescale", action="store_true",
                   help="PEMN's exact padding: no per-layer fan-in rescaling")
    d.add_argument("--seed", type=int, default=0,
                   help="the prototype's seed")
    d.add_argument("--width", type=float, default=1.0,
                   help="width multiplier of the masked model")
    d.add_argument("--keep", type=float, default=0.5,
                   help="fraction of each layer's edges a mask keeps")
    d.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    x = sub.add_parser("export", help="write a run's final model as one small model.pemn file")
    x.add_argument("run_dir", type=Path, help="a simulations.run / simulations.deploy --out")
    x.add_argument("--out", type=Path, default=Path("model.pemn"),
                   help="the model file to write")
    x.add_argument("--method", default=None,
                   help="which method's model (default: the run's first non-FedAvg method)")
    e = sub.add_parser("evaluate", help="rebuild a model.pemn and measure its test accuracy")
    e.add_argument("model", type=Path,
                   help="a model file (python -m pemn_fl export)")
    e.add_argument("--dataset", default=None, help="check the file is for this dataset")
    e.add_argument("--data-dir", default=None, help="where the dataset files are on this machine")
    e.add_argument("--method-module", default=None, metavar="MODULE",
                   help="a plug-in method's module (mypkg.mymethod), imported to evaluate its "
                   "model: a model file names its method but never decides what code runs, so "
                   "only a module you name here is imported")  # fmt: skip
    o = sub.add_parser("options", help="the options reference (docs/options.md), written "
                       "from the declarations")  # fmt: skip
    o.add_argument("--write", action="store_true", help="write docs/options.md and the run "
                   "config of pyproject.toml from the declarations (run it after a change)")
    o.add_argument("--check", action="store_true", help="exit 1, naming them, if those files "
                   "differ from the declarations (what a test checks)")
    o.add_argument("--methods", default="", help="with neither: print the page with these "
                   "plug-in methods' options added (a comma list of module paths)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "options":
        return _options(args.methods, args.write, args.check)
    if args.command == "export":
        return _export(args.run_dir, args.out, args.method)
    if args.command == "evaluate":
        return _evaluate(args.model, args.dataset, args.data_dir, args.method_module)

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


def _export(run_dir: Path, out: Path, method: str | None) -> int:
    import shutil

    from pemn_fl.export import find_model
    from pemn_fl.modelfile import ModelFileError, load

    try:
        source = find_model(run_dir, method)
        model = load(source)  # checked whole before it is handed on
        shutil.copyfile(source, out)
    except ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    size = out.stat().st_size
    dense = int(model.info.get("float32_bytes", 0))
    ratio = f" ({dense / size:.1f}x smaller)" if dense and size < dense else ""
    print(f"{out}: {model.method} after round {model.final_round}, accuracy "
          f"{model.accuracy:.4f}; {size:,} bytes, against {dense:,} bytes for the same "
          f"model's arrays as float32{ratio}")  # fmt: skip
    return 0


def _evaluate(path: Path, dataset: str | None, data_dir: str | None,
              plugin: str | None = None) -> int:  # fmt: skip
    from pemn_fl.export import evaluate_model
    from pemn_fl.modelfile import ModelFileError, load

    try:
        model = load(path)
        if dataset is not None and dataset != model.run_config.get("dataset"):
            raise ModelFileError(f"{path} is a {model.run_config.get('dataset')} model, not "
                                 f"{dataset}")  # fmt: skip
        loss, acc = evaluate_model(model, data_dir, plugin)
        if not math.isfinite(loss):  # within the weight bound it cannot be: say so if it is
            raise ModelFileError(f"{path}: the model evaluates to a non-finite loss ({loss}); "
                                 "its weights are not those of a trained network")  # fmt: skip
    except (ModelFileError, DataError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: {model.method} on {model.run_config.get('dataset')}: test accuracy "
          f"{acc:.4f}, loss {loss:.4f} (the run recorded {model.accuracy:.4f} after round "
          f"{model.final_round})")  # fmt: skip
    return 0



def _options(methods: str, write: bool, check: bool) -> int:
    """Print the options reference, or write or check the files made from it."""
    from pemn_fl import reference

    try:
        if write or check:
            changed = reference.write() if write else reference.drift()
            for path in changed:
                print(f"{'wrote' if write else 'out of date'}: {path}")
            return 1 if check and changed else 0
        specs = [m.strip() for m in methods.split(",") if m.strip()]
        print(reference.options_doc(specs), end="")
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"error: {exc} (run it in a checkout of pemn-fl)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
