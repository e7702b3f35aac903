"""Run settings: one typed, validated object shared by the runner, the ServerApp and the ClientApp.

Keys are Flower run-config keys (kebab-case, as in ``[tool.flwr.app.config]`` of
``pyproject.toml``), so ``flwr run . --run-config "keep=0.3"`` and ``python -m
simulations.run --keep 0.3`` mean the same thing. The run config is part of the app (it
ships with the FAB in a deployment), so it never has to travel in a round's messages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace

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


@dataclass(frozen=True)
class RunSettings:
    """What every method shares: data, model, rounds, faults, bytes, seed.

    A method's own hyperparameters are not fields here: each method declares them
    (``pemn_fl.options.Option``) and they travel in ``options``, read with
    ``settings[OPTION]`` (the option's default when unset). Build settings from a run config
    or the command line with ``pemn_fl.methods.settings_from``, which knows every method's
    declarations and checks the values against them.
    """

    methods: str = "evolve_dither,fedavg"  # the accuracy study's winner, and the baseline
    num_server_rounds: int = 12
    dataset: str = "digits"
    data_dir: str = ""
    model: str = "mlp"
    width: float = 1.0  # the masked / prototype model (FedAvg's is the option dense-width)
    partition: str = "dirichlet"
    alpha: float = 0.5
    classes_per_client: int = 2
    fraction: float = 1.0
    local_epochs: int = 2
    batch_size: int = 32
    optimizer: str = "sgd"
    prototype: str = "dense"
    init: str = "signed-constant"
    rescale: bool = True
    vote_weighting: str = "examples"
    drop_rate: float = 0.0  # fault injection: share of sampled clients that fail (pemn_fl.faults)
    corrupt_rate: float = 0.0  # fault injection: share of replies with a bit flipped per payload
    straggler_rate: float = 0.0  # fault injection: share of sampled clients that answer late
    round_deadline: float = 3600.0  # seconds the server waits for a round's replies (Flower's)
    byzantine: float = 0.0  # share of clients that attack every round (pemn_fl.faults)
    trim_votes: float = 0.0  # mask votes: share of the farthest-from-median votes dropped
    bytes_level: str = "wire"  # summaries and plots: payload, message or wire bytes
    # Every method's step size over the rounds (FedAvg's and the compressors' lr, the mask
    # methods' score lr, signSGD's server step, the evolving noise scale): constant or cosine.
    lr_schedule: str = "constant"
    # Replies carry num-examples and train-loss inside the update record (one HTTP object
    # less per reply on a Flower 1.42 wire); FedAvg keeps Flower's own reply format.
    compact_replies: bool = False
    # Where local training and server evaluation run: cpu, cuda or auto (CUDA if present).
    device: str = "cpu"
    # The time and energy model (pemn_fl.timeline): the clients' links (a profile, a mix
    # like "lte:0.6,3g:0.4" or a trace CSV; "" = no time model, bytes only), their devices,
    # the server's device, and Flower 1.42's polling or an ideal transport. With a link, the
    # round deadline is judged on simulated time: slow links and devices become stragglers.
    # Which clients train each round (pemn_fl.sampling): uniform, or GlueFL's sticky sampling
    # with its group size and the newcomers per round (0: scaled from the sample size).
    sampler: str = "uniform"
    sticky_group: int = 0
    sticky_change: int = 0
    link: str = ""
    client_device: str = "phone"
    server_device: str = "laptop"
    transport: str = "flower"
    checkpoint_dir: str = ""  # clients save their state here each round, for --resume
    seed: int = 0
    min_nodes: int = 1
    # The methods' own options, (name, value) sorted by name; a dict is accepted too.
    options: tuple[tuple[str, object], ...] = ()

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_run_config(cls, config: Mapping[str, object],
                        declared: Mapping[str, Option] | None = None) -> RunSettings:  # fmt: skip
        """Build from a Flower run config (kebab-case keys). Keys of ``declared`` options are
        coerced and checked by their declaration; any other unknown key is an error."""
        known = {f.name.replace("_", "-"): f for f in fields(cls) if f.name != "options"}
        declared = declared or {}
        kwargs: dict[str, object] = {}
        options: dict[str, object] = {}
        for key, value in config.items():
            if key in known:
                kwargs[known[key].name] = _coerce(key, value, known[key].type)
            elif key in declared:
                try:
                    options[key] = declared[key].coerce(value)
                except OptionError as exc:
                    raise SettingsError(str(exc)) from None
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
        if isinstance(self.options, Mapping):
            object.__setattr__(self, "options", tuple(sorted(self.options.items())))
        methods = self.method_list
        if not methods:
            raise SettingsError(f"methods={self.methods!r}: name at least one method")
        if len(set(methods)) != len(methods):
            raise SettingsError(f"methods={self.methods!r}: each method may appear only once")
        _choice("dataset", self.dataset, DATASETS)
        _choice("model", self.model, MODELS)
        _choice("partition", self.partition, SCHEMES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("init", self.init, INITS)
        _choice("vote-weighting", self.vote_weighting, VOTE_WEIGHTINGS)
        _choice("bytes-level", self.bytes_level, BYTES_LEVELS)
        _choice("lr-schedule", self.lr_schedule, SCHEDULES)
        _choice("device", self.device, DEVICES)
        _choice("transport", self.transport, TRANSPORTS)
        _choice("sampler", self.sampler, SAMPLERS)
        if self.sticky_group < 0 or self.sticky_change < 0:
            raise SettingsError("sticky-group and sticky-change must be >= 0 (0: the default)")
        sample = max(1, int(round(self.fraction * self.min_nodes)))
        if self.sticky_change and self.sticky_change >= sample:
            raise SettingsError(f"sticky-change={self.sticky_change}: of each round's "
                                f"{sample} clients some must come from the sticky group; "
                                f"give fewer than {sample}")  # fmt: skip
        if self.sticky_group and not (sample - self.sticky_change <= self.sticky_group
                                      <= self.min_nodes - max(self.sticky_change, 1)):
            raise SettingsError(f"sticky-group={self.sticky_group}: with {self.min_nodes} "
                                f"clients and {sample} a round it must hold the sample's "
                                "sticky part and leave room outside it for the newcomers")
        try:
            if self.link:
                check_spec(self.link, "link")
            check_spec(self.client_device, "device", "client-device")
            server_device(self.server_device)
        except ProfileError as exc:
            raise SettingsError(str(exc)) from None
        try:
            resolve_device(self.device)
        except DeviceError as exc:
            raise SettingsError(str(exc)) from None
        if not 0.0 <= self.byzantine < 0.5:
            raise SettingsError(f"byzantine={self.byzantine!r}: the attacking share of clients "
                                "must be in [0, 0.5)")  # fmt: skip
        if not 0.0 <= self.trim_votes < 0.5:
            raise SettingsError(f"trim-votes={self.trim_votes!r}: the share of votes dropped "
                                "must be in [0, 0.5)")  # fmt: skip
        attackers = int(self.byzantine * self.min_nodes + 0.5)  # as pemn_fl.faults counts them
        if attackers and 2 * attackers >= self.min_nodes:
            raise SettingsError(
                f"byzantine={self.byzantine!r}: with {self.min_nodes} clients that is "
                f"{attackers} attackers, not a minority; lower it below "
                f"{(self.min_nodes - 1) // 2 / self.min_nodes + 0.5 / self.min_nodes:.3g}"
            )
        _positive("num-server-rounds", self.num_server_rounds)
        _positive("local-epochs", self.local_epochs)
        _positive("batch-size", self.batch_size)
        _positive("classes-per-client", self.classes_per_client)
        _positive("min-nodes", self.min_nodes)
        if self.data_dir and self.dataset in BUNDLED:
            raise SettingsError(
                f"data-dir={self.data_dir!r}: {self.dataset} needs no files (it is bundled or "
                "generated); drop data-dir, or choose a dataset read from files "
                "(fashion-mnist, mnist, cifar10)"
            )
        for name in ("width", "alpha"):
            value = getattr(self, name.replace("-", "_"))
            if not (value > 0 and math.isfinite(value)):
                raise SettingsError(f"{name}={value!r}: must be a positive number")
        check_width(self, "width", self.width)
        if not 0.0 < self.fraction <= 1.0:
            raise SettingsError(f"fraction={self.fraction!r}: must be in (0, 1]")
        for name in ("drop-rate", "corrupt-rate", "straggler-rate"):
            value = getattr(self, name.replace("-", "_"))
            if not 0.0 <= value <= 1.0:
                raise SettingsError(f"{name}={value!r}: must be a probability in [0, 1]")
        if self.drop_rate + self.corrupt_rate + self.straggler_rate > 1.0:
            raise SettingsError("drop-rate + corrupt-rate + straggler-rate must be at most 1")
        if not (self.round_deadline > 0 and math.isfinite(self.round_deadline)):
            raise SettingsError(f"round-deadline={self.round_deadline!r}: must be a positive "
                                "number of seconds")  # fmt: skip
        if self.straggler_rate > 0 and self.round_deadline > MAX_STRAGGLER_DEADLINE:
            raise SettingsError(
                f"straggler-rate={self.straggler_rate!r} with round-deadline="
                f"{self.round_deadline!r}: a straggler answers just after the deadline, so set "
                f"--round-deadline (seconds, at most {MAX_STRAGGLER_DEADLINE:g}) above a normal "
                "round's client time"
            )
        if not 0 <= self.seed < 2**32:
            raise SettingsError(f"seed={self.seed!r}: must be in [0, {2**32 - 1}] (the "
                                "data split's random state is 32-bit)")  # fmt: skip
        try:
            self.prototype_spec  # noqa: B018 - validate
        except PrototypeSpecError as exc:
            raise SettingsError(str(exc)) from None

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


def _coerce(key: str, value: object, type_name: object) -> object:
    target = {"int": int, "float": float, "bool": bool, "str": str}[str(type_name)]
    try:
        if target is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                raise ValueError(value)
            return bool(value)
        if target is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return target(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{key}={value!r}: expected a {target.__name__}") from None


def check_width(settings: RunSettings, name: str, width: float) -> None:
    """A model at ``width`` must stay within ``MAX_PARAMETERS`` (counted without memory)."""
    check_model_size(settings.model, settings.dataset, name, width)


def check_model_size(model: str, dataset: str, name: str, width: float) -> None:
    """``model`` on ``dataset``'s inputs at ``width`` must be a positive, finite width whose
    model stays within ``MAX_PARAMETERS`` (counted on the meta device, without memory): the
    one bound every command that builds a model applies (``simulations.run`` through
    ``RunSettings``, ``python -m pemn_fl describe`` directly), so none of them asks torch for
    gigabytes first and fails after."""
    if not (width > 0 and math.isfinite(width)):
        raise SettingsError(f"{name}={width!r}: must be a positive number")
    count = parameter_count(model, INPUT_SHAPES[dataset], 10, width)
    if count > MAX_PARAMETERS:
        raise SettingsError(f"{name}={width!r}: a {model} that wide has {count:.3g} "
                            f"weights; pemn-fl builds at most {MAX_PARAMETERS:.0e}")  # fmt: skip


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise SettingsError(f"{name}={value!r}: use one of {', '.join(valid)}")


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise SettingsError(f"{name}={value!r}: must be >= 1")
