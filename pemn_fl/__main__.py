"""``python -m pemn_fl describe|export|evaluate|options ...``: the command-line face of the
library."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

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
    x = sub.add_parser("export", help="write a run's final model as one small model.pemn file")
    x.add_argument("run_dir", type=Path, help="a simulations.run / simulations.deploy --out")
    x.add_argument("--out", type=Path, default=Path("model.pemn"))
    x.add_argument("--method", default=None,
                   help="which method's model (default: the run's first non-FedAvg method)")
    e = sub.add_parser("evaluate", help="rebuild a model.pemn and measure its test accuracy")
    e.add_argument("model", type=Path)
    e.add_argument("--dataset", default=None, help="check the file is for this dataset")
    e.add_argument("--data-dir", default=None, help="where the dataset files are on this machine")
    e.add_argument("--method-module", default=None, metavar="MODULE",
                   help="a plug-in method's module (mypkg.mymethod), imported to evaluate its "
                   "model: a model file names its method but never decides what code runs, so "
                   "only a module you name here is imported")  # fmt: skip
    o = sub.add_parser("options", help="every method's own options, as a markdown table "
                       "(docs/options.md is this output)")  # fmt: skip
    o.add_argument("--methods", default="", help="plug-in methods whose options to add")
    args = parser.parse_args(argv)
    if args.command == "options":
        return _options(args.methods)
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



def _options(methods: str) -> int:
    """Print the options table: one row per option, from the methods' declarations."""
    from pemn_fl.methods import options, users
    from pemn_fl.options import markdown

    specs = [m.strip() for m in methods.split(",") if m.strip()]
    try:
        print(OPTIONS_HEADER + markdown(options(specs).values(), users(specs)), end="")
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    return 0


OPTIONS_HEADER = """# Method options

Each method declares its own options next to its code (`pemn_fl.options.Option`, listed in
its `Method(options=...)`); a family declares its shared ones once. From those declarations
come the `--<option>` flags of `python -m simulations.run`, the keys of
`[tool.flwr.app.config]` in pyproject.toml, the checks, and this table, which
`python -m pemn_fl options > docs/options.md` writes (a test holds the file and pyproject.toml
to the code). Settings every method shares (data, model, rounds, faults, bytes, seed) are in
`python -m simulations.run --help`. An option set to other than its default that no method
of the run reads changes nothing: `simulations.run` and `simulations.deploy` say so in one
`note:` line before the run starts (`--methods fedavg --density 0.5` runs plain FedAvg).

"""


if __name__ == "__main__":
    sys.exit(main())
