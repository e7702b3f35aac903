"""Run settings: one typed, validated object shared by the runner, the ServerApp and the ClientApp.

Every field is declared by an ``Option`` (``pemn_fl.options``), like the methods' own
options: its flag, run-config key, default, valid values and checks are said once, here.

Keys are Flower run-config keys (kebab-case, as in ``[tool.flwr.app.config]`` of
``pyproject.toml``), so ``flwr run . --run-config "keep=0.3"`` and ``python -m
simulations.run --keep 0.3`` mean the same thing. The run config is part of the app (it
ships with the FAB in a deployment), so it never has to travel in a round's messages.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from pemn_fl.data import BUNDLED, DATASETS, INPUT_SHAPES
from pemn_fl.models import MAX_PARAMETERS, MODELS, parameter_count
from pemn_fl.options import Option, OptionError
from pemn_fl.partition import SCHEMES
from pemn_fl.profiles import ProfileError, check_spec, server_device
from pemn_fl.prototype import INITS, PrototypeSpec, PrototypeSpecError
from pemn_fl.sampling import SAMPLERS
from pemn_fl.task import DEVICES, OPTIMIZERS, DeviceError, TrainConfig, resolve_device
from pemn_fl.timeline import TRANSPORTS

VOTE_WEIGHTINGS = ("examples", "uniform")
MAX_STRAGGLER_DEADLINE = 600.0  # a straggler sleeps past the deadline: keep runs finite
BYTES_LEVELS = ("payload", "message", "wire")  # see pemn_fl.report.LEVELS
SCHEDULES = ("constant", "cosine")  # --lr-schedule: every method's step size over the rounds
COSINE_FLOOR = 0.1  # the cosine schedule ends at a tenth of the step: the last round still trains


class SettingsError(ValueError):
    """A bad setting; the message names the setting, the bad value and what is valid."""


# -- checks that depend on more than one setting (``Option.check``: value, settings) -------
def _check_methods(value: object, settings: RunSettings) -> None:
    methods = settings.method_list
    if not methods:
        raise SettingsError(f"methods={value!r}: name at least one method")
    if len(set(methods)) != len(methods):
        raise SettingsError(f"methods={value!r}: each method may appear only once")


def _check_data_dir(value: object, settings: RunSettings) -> None:
    if value and settings.dataset in BUNDLED:
        raise SettingsError(
            f"data-dir={value!r}: {settings.dataset} needs no files (it is bundled or "
            "generated); drop data-dir, or choose a dataset read from files "
            "(fashion-mnist, mnist, cifar10)"
        )


def _check_width(value: object, settings: RunSettings) -> None:
    check_width(settings, "width", float(value))  # type: ignore[arg-type]


def _check_prototype(value: object, settings: RunSettings) -> None:
    try:
        settings.prototype_spec  # noqa: B018 - validate
    except PrototypeSpecError as exc:
        raise SettingsError(str(exc)) from None


def _check_rates(value: object, settings: RunSettings) -> None:
    """The fault rates share the sampled clients; a straggler needs a finite deadline."""
    if settings.drop_rate + settings.corrupt_rate + settings.straggler_rate > 1.0:
        raise SettingsError("drop-rate + corrupt-rate + straggler-rate must be at most 1")
    if settings.straggler_rate > 0 and settings.round_deadline > MAX_STRAGGLER_DEADLINE:
        raise SettingsError(
            f"straggler-rate={settings.straggler_rate!r} with round-deadline="
            f"{settings.round_deadline!r}: a straggler answers just after the deadline, so set "
            f"--round-deadline (seconds, at most {MAX_STRAGGLER_DEADLINE:g}) above a normal "
            "round's client time"
        )


def _check_byzantine(value: object, settings: RunSettings) -> None:
    attackers = int(settings.byzantine * settings.min_nodes + 0.5)  # as pemn_fl.faults counts
    n = settings.min_nodes
    if attackers and 2 * attackers >= n:
        raise SettingsError(
            f"byzantine={settings.byzantine!r}: with {n} clients that is {attackers} "
            f"attackers, not a minority; lower it below {(n - 1) // 2 / n + 0.5 / n:.3g}"
        )


def _sample(settings: RunSettings) -> int:
    """Clients a round samples (``RoundSampler``'s count)."""
    return max(1, int(round(settings.fraction * settings.min_nodes)))


def _check_sticky_change(value: object, settings: RunSettings) -> None:
    sample = _sample(settings)
    if settings.sticky_change and settings.sticky_change >= sample:
        raise SettingsError(f"sticky-change={settings.sticky_change}: of each round's "
                            f"{sample} clients some must come from the sticky group; "
                            f"give fewer than {sample}")  # fmt: skip


def _check_sticky_group(value: object, settings: RunSettings) -> None:
    sample, group, change = _sample(settings), settings.sticky_group, settings.sticky_change
    if group and not sample - change <= group <= settings.min_nodes - max(change, 1):
        raise SettingsError(f"sticky-group={group}: with {settings.min_nodes} clients and "
                            f"{sample} a round it must hold the sample's sticky part and "
                            "leave room outside it for the newcomers")  # fmt: skip


def _check_profile(kind: str, flag: str) -> Callable[[object, RunSettings], None]:
    def check(value: object, settings: RunSettings) -> None:
        try:
            if kind == "server":
                server_device(str(value))
            elif value or kind != "link":  # no link: no time model, bytes only
                check_spec(str(value), kind, flag)
        except ProfileError as exc:
            raise SettingsError(str(exc)) from None

    return check


def _check_device(value: object, settings: RunSettings) -> None:
    try:
        resolve_device(str(value))
    except DeviceError as exc:
        raise SettingsError(str(exc)) from None


def setting(option: Option) -> Any:
    """A ``RunSettings`` field declared by ``option``: its default, and the declaration in
    the field's metadata, where ``SHARED`` and the validation read it."""
    return field(default=option.default, metadata={"option": option})


def _positive(name: str, default: float, help: str, **more: Any) -> Option:
    return Option(name, default, help, low=0, low_open=True, **more)


def _share(name: str, default: float, help: str, **more: Any) -> Option:
    return Option(name, default, help, low=0, high=1, **more)


@dataclass(frozen=True)
class RunSettings:
    """What every method shares: data, model, rounds, faults, bytes, time, seed.

    Each field is declared once, by its ``Option`` (name, default, valid values, help,
    checks against the other settings): the command line, the run config, config.json,
    pyproject.toml and docs/options.md all derive from these declarations, and
    ``__post_init__`` checks every value against them. A method's own hyperparameters are not
    fields here: each method declares them and they travel in ``options``, read with
    ``settings[OPTION]`` (the option's default when unset). Build settings from a run config
    or the command line with ``pemn_fl.methods.settings_from``, which knows every method's
    declarations and checks the values against them.
    """

    methods: str = setting(Option(
        "methods", "evolve,fedavg", "'all' or a comma list of methods (built-in names, "
        "or plug-in module paths such as mypkg.mymethod)", check=_check_methods))
    num_server_rounds: int = setting(Option(
        "num-server-rounds", 12, "training rounds of each method", low=1, flag="rounds"))
    dataset: str = setting(Option("dataset", "digits", "the data set (digits and synthetic "
                                  "are bundled or generated)", choices=DATASETS))
    data_dir: str = setting(Option("data-dir", "", "directory holding the dataset files",
                                   check=_check_data_dir))
    model: str = setting(Option("model", "mlp", "the architecture", choices=MODELS))
    width: float = setting(_positive(
        "width", 1.0, "width multiplier of the masked and prototype models (FedAvg's is "
        "--dense-width)", check=_check_width))
    partition: str = setting(Option("partition", "dirichlet", "how the training set is split "
                                    "over the clients", choices=SCHEMES))
    alpha: float = setting(_positive("alpha", 0.5, "Dirichlet concentration of the split"))
    classes_per_client: int = setting(Option(
        "classes-per-client", 2, "classes per client of the pathological split", low=1))
    fraction: float = setting(Option("fraction", 1.0, "fraction of clients sampled per round",
                                     low=0, high=1, low_open=True))
    local_epochs: int = setting(Option("local-epochs", 2, "local epochs per round", low=1))
    batch_size: int = setting(Option("batch-size", 32, "local batch size", low=1))
    optimizer: str = setting(Option("optimizer", "sgd", "local optimizer of the methods that "
                                    "train weights", choices=OPTIMIZERS))
    prototype: str = setting(Option(
        "prototype", "dense", "prototype strategy of the masked model: dense, one-layer, mp or "
        "rp:RATIO", check=_check_prototype))
    init: str = setting(Option("init", "signed-constant", "the prototype's initialisation",
                               choices=INITS))
    rescale: bool = setting(Option(
        "rescale", True, "rescale every prototype layer to its own He std (--no-rescale: "
        "PEMN's exact padding)"))
    vote_weighting: str = setting(Option(
        "vote-weighting", "examples", "a client's weight in a vote or mean: its examples, or "
        "one each", choices=VOTE_WEIGHTINGS))
    drop_rate: float = setting(_share(
        "drop-rate", 0.0, "fault injection: share of sampled clients that fail each round"))
    corrupt_rate: float = setting(_share(
        "corrupt-rate", 0.0, "fault injection: share of replies with one bit flipped per "
        "payload"))
    straggler_rate: float = setting(_share(
        "straggler-rate", 0.0, "fault injection: share of sampled clients that answer after "
        "the round deadline (needs --round-deadline)", check=_check_rates))
    round_deadline: float = setting(_positive(
        "round-deadline", 3600.0, "seconds the server waits for a round's replies (with "
        "--link: judged on simulated time)"))
    byzantine: float = setting(Option(
        "byzantine", 0.0, "share of clients that attack every round (pemn: inverted masks; "
        "fedavg: negated, scaled updates)", low=0, high=0.5, high_open=True,
        check=_check_byzantine))
    trim_votes: float = setting(Option(
        "trim-votes", 0.0, "mask-voting methods: share of each round's votes farthest from the "
        "coordinate-wise median left out (a trimmed vote)", low=0, high=0.5, high_open=True))
    bytes_level: str = setting(Option(
        "bytes-level", "wire", "byte level of the summary and figure: the methods' payloads, "
        "whole Flower messages, or the HTTP traffic a Flower 1.42 deployment makes for them "
        "(modelled here; measured by simulations.deploy); every level is in rounds.csv",
        choices=BYTES_LEVELS, flag="bytes"))
    lr_schedule: str = setting(Option(
        "lr-schedule", "constant", "every method's step size over the rounds: constant, or a "
        "cosine decay to a tenth (lr, dense-lr, pm-lr, server-lr and the noise scale)",
        choices=SCHEDULES))
    compact_replies: bool = setting(Option(
        "compact-replies", False, "replies carry num-examples and train-loss inside the update "
        "record: one HTTP object less per reply on the wire (FedAvg keeps Flower's format)"))
    device: str = setting(Option(
        "device", "cpu", "where local training and server evaluation run (auto: CUDA if "
        "PyTorch sees a device, else the CPU)", choices=DEVICES, check=_check_device))
    sampler: str = setting(Option(
        "sampler", "uniform", "which clients train each round, for every method alike: a fresh "
        "uniform draw, or GlueFL's sticky sampling (recently used clients first)",
        choices=SAMPLERS))
    sticky_group: int = setting(Option(
        "sticky-group", 0, "with --sampler sticky: the sticky group's size (0: 1.2x the "
        "sample)", low=0, check=_check_sticky_group))
    sticky_change: int = setting(Option(
        "sticky-change", 0, "with --sampler sticky: clients drawn from outside the group each "
        "round (0: a fifth of the sample)", low=0, check=_check_sticky_change))
    link: str = setting(Option(
        "link", "", "time and energy on the clients' links: a profile, a mix (lte:0.6,3g:0.4) "
        "or a trace CSV; rounds.csv and the summary gain time and energy, and the round "
        "deadline is judged on simulated time (docs/time-and-energy.md); empty: bytes only",
        metavar="PROFILE|MIX|TRACE.csv", check=_check_profile("link", "link")))
    client_device: str = setting(Option(
        "client-device", "phone", "with --link: the clients' devices, a profile, a mix or a "
        "trace CSV", metavar="PROFILE|MIX|TRACE.csv",
        check=_check_profile("device", "client-device")))
    server_device: str = setting(Option(
        "server-device", "laptop", "with --link: the server's device (aggregation and "
        "evaluation time)", check=_check_profile("server", "server-device")))
    transport: str = setting(Option(
        "transport", "flower", "with --link: flower (Flower 1.42's polling as deployed) or "
        "ideal (no polling: the links and devices alone)", choices=TRANSPORTS))
    checkpoint_dir: str = setting(Option(
        "checkpoint-dir", "", "where every party saves its state each round, for --resume "
        "(the runner sets it)", command_line=False))
    seed: int = setting(Option(
        "seed", 0, "the run's seed: prototype, partition, client sample, noise, faults (the "
        "data split's random state is 32-bit)", low=0, high=2**32 - 1))
    min_nodes: int = setting(Option(
        "min-nodes", 1, "nodes the server waits for before round 1 (the runner sets it from "
        "--clients or --nodes)", low=1, command_line=False, app_default=2))
    # The methods' own options, (name, value) sorted by name; a dict is accepted too.
    options: tuple[tuple[str, object], ...] = ()

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_run_config(cls, config: Mapping[str, object],
                        declared: Mapping[str, Option] | None = None) -> RunSettings:  # fmt: skip
        """Build from a Flower run config (kebab-case keys). Keys of ``declared`` options are
        coerced and checked by their declaration; any other unknown key is an error."""
        known = {option.name: option for option in SHARED}
        declared = declared or {}
        kwargs: dict[str, object] = {}
        options: dict[str, object] = {}
        for key, value in config.items():
            if key in known:
                kwargs[known[key].attr] = _coerced(known[key], value)
            elif key in declared:
                options[key] = _coerced(declared[key], value)
            else:
                valid = sorted([*known, *declared])
                raise SettingsError(f"unknown setting {key!r}; valid settings: "
                                    f"{', '.join(valid)}")  # fmt: skip
        for name, option in declared.items():  # every declared option has its value
            options.setdefault(name, option.default)
        return cls(**kwargs, options=options)  # type: ignore[arg-type]

    def to_run_config(self) -> dict[str, object]:
        shared = {k.replace("_", "-"): v for k, v in asdict(self).items() if k != "options"}
        return {**shared, **dict(self.options)}

    def __getitem__(self, option: Option | str) -> object:
        """A method option's value: ``settings[NOISE_SCALE]`` (its default when unset)."""
        name = option if isinstance(option, str) else option.name
        for key, value in self.options:
            if key == name:
                return value
        if isinstance(option, str):
            raise KeyError(f"no option {option!r} in these settings")
        return option.default

    def with_options(self, **values: object) -> RunSettings:
        """These settings with some options changed: ``s.with_options(**{"noise-scale": 2})``."""
        return replace(self, options={**dict(self.options), **values})  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        """Every value against its declaration (type, range, choices), then the checks that
        read other settings too, each raising ``SettingsError`` naming what is valid."""
        if isinstance(self.options, Mapping):
            object.__setattr__(self, "options", tuple(sorted(self.options.items())))
        for option in SHARED:
            _coerced(option, getattr(self, option.attr))
        for option in SHARED:
            if option.check is not None:
                option.check(getattr(self, option.attr), self)

    # -- derived -----------------------------------------------------------------------
    @property
    def method_list(self) -> list[str]:
        """The methods to run, in the given order (``settings_from`` expands ``all``)."""
        return [m.strip() for m in self.methods.split(",") if m.strip()]

    @property
    def prototype_spec(self) -> PrototypeSpec:
        return PrototypeSpec(
            seed=self.seed, strategy=self.prototype, init=self.init, rescale=self.rescale
        )

    def scheduled(self, step: float, server_round: int) -> float:
        """``step`` (a method's step size) in round ``server_round`` under ``lr-schedule``.

        ``constant``: ``step`` itself (exactly: multiplied by 1.0). ``cosine``: half a cosine
        from ``step`` in round 1 down to ``COSINE_FLOOR * step`` in the last round, the same
        on every party (the evolving noise scale is replicated state)."""
        if self.lr_schedule == "constant" or self.num_server_rounds < 2:
            return step * 1.0
        progress = min(max(server_round - 1, 0), self.num_server_rounds - 1) / (
            self.num_server_rounds - 1)  # fmt: skip
        return step * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))

    def train_config(self, lr: float) -> TrainConfig:
        """Local training settings at learning rate ``lr`` (each method picks its own)."""
        return TrainConfig(epochs=self.local_epochs, batch_size=self.batch_size, lr=lr,
                           optimizer=self.optimizer, device=self.torch_device)  # fmt: skip

    @property
    def torch_device(self) -> str:
        """The device local training and evaluation run on (``device`` resolved here)."""
        return resolve_device(self.device)


def check_width(settings: RunSettings, name: str, width: float) -> None:
    """A model at ``width`` must stay within ``MAX_PARAMETERS`` (counted without memory)."""
    check_model_size(settings.model, settings.dataset, name, width)


def check_model_size(model: str, dataset: str, name: str, width: float) -> None:
    """``model`` on ``dataset``'s inputs at ``width`` must be a positive, finite width whose
    model stays within ``MAX_PARAMETERS`` (counted on the meta device, without memory): the
    one bound every command that builds a model applies (``simulations.run`` through
    ``RunSettings``, ``python -m pemn_fl describe`` directly), so none of them asks torch for
    gigabytes first and fails after."""
    # The bound a width option declares ((0, inf), finite), said the same way everywhere.
    _coerced(_positive(name, 1.0, "a width multiplier"), width)
    count = parameter_count(model, INPUT_SHAPES[dataset], 10, width)
    if count > MAX_PARAMETERS:
        raise SettingsError(f"{name}={width!r}: a {model} that wide has {count:.3g} "
                            f"weights; pemn-fl builds at most {MAX_PARAMETERS:.0e}")  # fmt: skip


def _coerced(option: Option, value: object) -> object:
    """``value`` as ``option`` types and bounds it; ``SettingsError`` if it cannot."""
    try:
        return option.coerce(value)
    except OptionError as exc:
        raise SettingsError(str(exc)) from None


# Every shared setting's declaration, in field order (the order of config.json's keys).
SHARED: tuple[Option, ...] = tuple(f.metadata["option"] for f in fields(RunSettings)
                                   if "option" in f.metadata)  # fmt: skip
