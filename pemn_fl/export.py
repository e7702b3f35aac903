"""Export a run's final model as ``model.pemn`` and evaluate one: a model is a seed + masks.

The run writes ``<out>/models/<method>.pemn`` for every method; ``python -m pemn_fl export``
picks one and reports its size against float32, and ``python -m pemn_fl evaluate`` rebuilds
the model from the settings in the file (the same prototype from the same seed), checks the
fingerprint and measures test accuracy through the very code the run evaluated with
(``Method.server(...).install`` + ``task.evaluate``), so it equals the run's final accuracy.

A model file is data, and loading one never runs code it names: its method is looked up in
the registry of built-in methods only, and the run settings it carries are reduced to that
one method (a run's plug-ins, listed as module paths in its ``methods``, are not imported).
A plug-in method's model is evaluated only when the user names the plug-in's module on the
command line (``evaluate --method-module MODULE``): importing a module runs it, and only the
user, not a file's header (which anyone can forge with a valid CRC), may decide that.
"""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import ArrayRecord

from pemn_fl import networks as N
from pemn_fl.config import RunSettings, SettingsError
from pemn_fl.methods import Method, ServerSide, get, is_plugin, names, options, settings_from
from pemn_fl.modelfile import ModelFile, ModelFileError, float32_bytes, model_fingerprint
from pemn_fl.report import BASELINE
from pemn_fl.sampling import RoundSampler
from pemn_fl.task import evaluate

LOCAL_PATHS = ("data-dir", "checkpoint-dir")  # run-config keys never written to a model file


def fingerprint_of(side: ServerSide) -> str:
    """What the settings rebuild, hashed: the model with the initial arrays installed
    (prototype weights, buffers, the seeded initial mask or weights)."""
    side.install(side.initial)
    state = {k: v.detach().cpu().numpy() for k, v in side.model.state_dict().items()}
    return model_fingerprint(state, side.initial.to_numpy_ndarrays())


def export_model(method: Method, settings: RunSettings, fingerprint: str, arrays: ArrayRecord,
                 server_round: int, accuracy: float) -> ModelFile:  # fmt: skip
    """A method's global model after ``server_round``, as ``model.pemn`` contents."""
    compact = method.compact(settings, arrays) if method.compact else arrays
    # Local paths stay local: where this machine kept its data and checkpoints means nothing
    # to whoever loads the file (``evaluate --data-dir`` names theirs).
    config = {**settings.to_run_config(), **{key: "" for key in LOCAL_PATHS}}
    return ModelFile(method=method.name, run_config=config,
                     fingerprint=fingerprint, arrays=compact, final_round=server_round,
                     accuracy=accuracy, info={"float32_bytes": float32_bytes(arrays)})  # fmt: skip


def method_of(model: ModelFile, plugin: str | None = None) -> tuple[Method, str]:
    """The method a model file names, and the ``methods`` spec that rebuilds it: a built-in
    from the registry by name; a plug-in only through ``plugin``, the module the user named
    (its ``METHOD`` must carry the file's method name). Never an import the file asks for."""
    if plugin is None:
        if model.method not in names():
            raise ModelFileError(
                f"the model file names method {model.method[:80]!r}, which is not a built-in "
                f"method ({', '.join(names())}); a model file never decides what code runs. "
                "If it is a plug-in's model and you trust that plug-in, name its module: "
                "--method-module MODULE"
            )
        return get(model.method), model.method
    if not is_plugin(plugin) or plugin in names():
        raise ModelFileError(f"--method-module {plugin}: give a plug-in's module path (such "
                             "as mypkg.mymethod); built-in methods need no flag")  # fmt: skip
    try:
        method = get(plugin)  # the user's explicit choice: this imports it
    except KeyError as exc:
        raise ModelFileError(f"--method-module {plugin}: {exc.args[0]}") from None
    if method.name != model.method:
        raise ModelFileError(f"--method-module {plugin} defines method {method.name!r}, but "
                             f"the model file is of {model.method[:80]!r}")  # fmt: skip
    return method, plugin


def rebuild_config(model: ModelFile, spec: str, data_dir: str | None) -> dict[str, object]:
    """The file's run settings for rebuilding one method: ``methods`` is that method alone
    (the run's other methods, plug-in module paths among them, are never imported), local
    paths are this machine's (``data_dir``), not the file's, and where the run listed
    plug-ins, the settings no loaded method declares (their options) are left out."""
    config = {**dict(model.run_config), **{key: "" for key in LOCAL_PATHS}}
    listed = [m.strip() for m in str(config.get("methods", "")).split(",") if m.strip()]
    if any(is_plugin(m) and m != spec for m in listed):
        known = set(RunSettings().to_run_config()) | set(options([spec]))
        config = {key: value for key, value in config.items() if key in known}
    config["methods"] = spec
    if data_dir is not None:
        config["data-dir"] = str(data_dir)
    return config


def rebuild(model: ModelFile, data_dir: str | None = None,
            plugin: str | None = None) -> tuple[RunSettings, ServerSide]:  # fmt: skip
    """The method's server side rebuilt from the file's settings, with its arrays installed
    (``plugin``: the module of a plug-in method, named by the user; see ``method_of``)."""
    method, spec = method_of(model, plugin)
    try:
        settings = settings_from(rebuild_config(model, spec, data_dir))
    except (SettingsError, ValueError, KeyError) as exc:
        raise ModelFileError(f"model file settings are not usable here: {exc}") from None
    side = method.server(settings, RoundSampler({0: 0}, 1.0, settings.seed))
    here = fingerprint_of(side)
    if here != model.fingerprint:
        raise ModelFileError(
            f"the settings in this file rebuild a different starting model here (fingerprint "
            f"{here} != {model.fingerprint}): the masks would select edges of "
            "another network. Use the pemn-fl and torch versions the run used."
        )
    try:
        side.install(model.arrays)
    except (ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise ModelFileError(f"model file arrays do not fit the {model.method} model: {exc}"
                             ) from None  # fmt: skip
    return settings, side


def evaluate_model(model: ModelFile, data_dir: str | None = None,
                   plugin: str | None = None) -> tuple[float, float]:  # fmt: skip
    """``(loss, accuracy)`` of the model on its dataset's test split."""
    settings, side = rebuild(model, data_dir, plugin)
    data = N.dataset_of(settings)
    return evaluate(side.model, data.x_test, data.y_test)


def find_model(run_dir: Path, method: str | None) -> Path:
    """``<run_dir>/models/<method>.pemn``; without ``method``, the run's only model or, when
    there are several, the first that is not FedAvg (the run's subject)."""
    models = run_dir / "models"
    found = sorted(models.glob("*.pemn")) if models.is_dir() else []
    if not found:
        raise ModelFileError(
            f"{run_dir} holds no models/*.pemn: is it a pemn-fl run directory of this "
            "version (the runner writes them after the last round)?"
        )
    names = [p.stem for p in found]
    if method is not None:
        if method not in names:
            raise ModelFileError(f"{run_dir} has no model for method {method!r}; it has "
                                 f"{', '.join(names)}")  # fmt: skip
        return models / f"{method}.pemn"
    names.sort(key=lambda n: (n == BASELINE, _method_order(run_dir).get(n, len(names))))
    return models / f"{names[0]}.pemn"


def _method_order(run_dir: Path) -> dict[str, int]:
    """Position of each method in the run's ``--methods`` (from its config.json), if known."""
    try:
        config = json.loads((run_dir / "config.json").read_text())["settings"]
        methods = str(config["methods"]).split(",")
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {name.strip(): i for i, name in enumerate(methods)}
