"""Run settings: one typed, validated object shared by the runner, the ServerApp and the ClientApp.

Keys are Flower run-config keys (kebab-case, as in ``[tool.flwr.app.config]`` of
``pyproject.toml``), so ``flwr run . --run-config "keep=0.3"`` and ``python -m
simulations.run --keep 0.3`` mean the same thing. The run config is part of the app (it
ships with the FAB in a deployment), so it never has to travel in a round's messages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from pemn_fl.data import BUNDLED, DATASETS, INPUT_SHAPES
from pemn_fl.levels_codec import MAX_LEVEL
from pemn_fl.models import MAX_PARAMETERS, MODELS, parameter_count
from pemn_fl.partition import SCHEMES
from pemn_fl.prototype import INITS, PrototypeSpec, PrototypeSpecError
from pemn_fl.task import DEVICES, OPTIMIZERS, DeviceError, TrainConfig, resolve_device

CLIENT_INITS = ("stateless", "stateful")
VOTE_WEIGHTINGS = ("examples", "uniform")
MAX_STRAGGLER_DEADLINE = 600.0  # a straggler sleeps past the deadline: keep runs finite
ROBUST = ("none", "median", "trimmed-mean")  # FedAvg's aggregation (Flower's strategies)
BYTES_LEVELS = ("payload", "message", "wire")  # see pemn_fl.report.LEVELS
SCHEDULES = ("constant", "cosine")  # --lr-schedule: every method's step size over the rounds
COSINE_FLOOR = 0.1  # the cosine schedule ends at a tenth of the step: the last round still trains
# A round's noise step of 100 He stds already wipes out any network; far larger values
# overflow the float32 weights every party replicates (1e300 made NaN and exited 0).
MAX_NOISE_SCALE = 100.0


class SettingsError(ValueError):
    """A bad setting; the message names the setting, the bad value and what is valid."""


@dataclass(frozen=True)
class RunSettings:
    methods: str = "evolve_dither,fedavg"  # the accuracy study's winner, and the baseline
    num_server_rounds: int = 12
    dataset: str = "digits"
    data_dir: str = ""
    model: str = "mlp"
    width: float = 1.0  # PEMN's masked model
    dense_width: float = 1.0  # FedAvg's dense model
    partition: str = "dirichlet"
    alpha: float = 0.5
    classes_per_client: int = 2
    fraction: float = 1.0
    local_epochs: int = 2
    batch_size: int = 32
    lr: float = 1.0  # score learning rate (PEMN); tuned for the digits classroom default
    dense_lr: float = 0.05  # weight learning rate (FedAvg)
    optimizer: str = "sgd"
    prototype: str = "dense"
    init: str = "signed-constant"
    rescale: bool = True
    keep: float = 0.5
    client_init: str = "stateful"
    margin: float = 0.0
    server_momentum: float = 0.0
    vote_weighting: str = "examples"
    noise_scale: float = 1.0  # evolve*: round noise, in units of each layer's He std
    density: float = 0.05  # evolve*: fraction of weights a client's noise mask switches on
    noise_lr: float = 0.001  # evolve*: Adam learning rate of the noise-mask scores
    dither_levels: int = 2  # evolve_dither: grid steps of the dithered vote (1 = one bit)
    weight_momentum: float = 0.9  # evolve_momentum: server momentum beta on the weights
    pm_lr: float = 0.1  # fedpm*: Adam learning rate of the mask scores (FedPM's value)
    posterior_decay: float = 1.0  # fedpm_bayes: weight of past rounds' votes (1 = keep all)
    server_lr: float = 0.001  # signsgd: the step everyone applies along the majority sign
    bits: int = 8  # qsgd: bits per weight with the sign (8, 4 or 2)
    topk_fraction: float = 0.01  # topk: fraction of each tensor's update sent, both ways
    drop_rate: float = 0.0  # fault injection: share of sampled clients that fail (pemn_fl.faults)
    corrupt_rate: float = 0.0  # fault injection: share of replies with a bit flipped per payload
    straggler_rate: float = 0.0  # fault injection: share of sampled clients that answer late
    round_deadline: float = 3600.0  # seconds the server waits for a round's replies (Flower's)
    byzantine: float = 0.0  # share of clients that attack every round (pemn_fl.faults)
    robust: str = "none"  # FedAvg: none (mean), median or trimmed-mean (Flower's strategies)
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
    checkpoint_dir: str = ""  # clients save their state here each round, for --resume
    seed: int = 0
    min_nodes: int = 1

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_run_config(cls, config: Mapping[str, object]) -> RunSettings:
        """Build from a Flower run config (kebab-case keys); unknown keys are an error."""
        known = {f.name.replace("_", "-"): f for f in fields(cls)}
        kwargs: dict[str, object] = {}
        for key, value in config.items():
            if key not in known:
                raise SettingsError(
                    f"unknown setting {key!r}; valid settings: {', '.join(sorted(known))}"
                )
            f = known[key]
            kwargs[f.name] = _coerce(key, value, f.type)
        return cls(**kwargs)

    def to_run_config(self) -> dict[str, object]:
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}

    def __post_init__(self) -> None:
        from pemn_fl.methods import get, is_plugin, names  # lazy: methods import this module

        methods = self.method_list
        valid = names()
        bad = [m for m in methods if m not in valid and not is_plugin(m)]
        if not methods or bad:
            raise SettingsError(
                f"methods={self.methods!r}: use 'all' or a comma list of {', '.join(valid)} "
                "(or plug-in module paths such as mypkg.mymethod)"
            )
        for spec in (m for m in methods if m not in valid):
            try:
                get(spec)
            except KeyError as exc:
                raise SettingsError(f"methods={self.methods!r}: {exc.args[0]}") from None
        if len(set(methods)) != len(methods):
            raise SettingsError(f"methods={self.methods!r}: each method may appear only once")
        _choice("dataset", self.dataset, DATASETS)
        _choice("model", self.model, MODELS)
        _choice("partition", self.partition, SCHEMES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("init", self.init, INITS)
        _choice("client-init", self.client_init, CLIENT_INITS)
        _choice("vote-weighting", self.vote_weighting, VOTE_WEIGHTINGS)
        _choice("robust", self.robust, ROBUST)
        _choice("bytes-level", self.bytes_level, BYTES_LEVELS)
        _choice("lr-schedule", self.lr_schedule, SCHEDULES)
        _choice("device", self.device, DEVICES)
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
        if self.byzantine > 0:
            unarmed = [m for m in methods if not get(m).attack]
            if unarmed:
                armed = [n for n in valid if get(n).attack]
                raise SettingsError(
                    f"byzantine={self.byzantine!r}: no attack is defined for "
                    f"{', '.join(unarmed)}; Byzantine clients are defined for {', '.join(armed)}"
                )
        _positive("num-server-rounds", self.num_server_rounds)
        _positive("local-epochs", self.local_epochs)
        _positive("batch-size", self.batch_size)
        _positive("classes-per-client", self.classes_per_client)
        _positive("min-nodes", self.min_nodes)
        _positive("dither-levels", self.dither_levels)
        if self.dither_levels > MAX_LEVEL:
            raise SettingsError(f"dither-levels={self.dither_levels!r}: the levels codec sends "
                                f"at most {MAX_LEVEL} steps; use 1..{MAX_LEVEL}")  # fmt: skip
        if self.noise_scale > MAX_NOISE_SCALE:
            raise SettingsError(f"noise-scale={self.noise_scale!r}: at most "
                                f"{MAX_NOISE_SCALE:g} (in He stds per round; larger overflows "
                                "the float32 weights)")  # fmt: skip
        if self.data_dir and self.dataset in BUNDLED:
            raise SettingsError(
                f"data-dir={self.data_dir!r}: {self.dataset} needs no files (it is bundled or "
                "generated); drop data-dir, or choose a dataset read from files "
                "(fashion-mnist, mnist, cifar10)"
            )
        for name in ("width", "dense-width", "lr", "dense-lr", "alpha", "noise-scale",
                     "noise-lr", "pm-lr", "server-lr"):  # fmt: skip
            value = getattr(self, name.replace("-", "_"))
            if not (value > 0 and math.isfinite(value)):
                raise SettingsError(f"{name}={value!r}: must be a positive number")
        for name, width in (("width", self.width), ("dense-width", self.dense_width)):
            count = parameter_count(self.model, INPUT_SHAPES[self.dataset], 10, width)
            if count > MAX_PARAMETERS:
                raise SettingsError(
                    f"{name}={width!r}: a {self.model} that wide has {count:.3g} weights; "
                    f"pemn-fl builds at most {MAX_PARAMETERS:.0e}"
                )
        if not 0.0 < self.fraction <= 1.0:
            raise SettingsError(f"fraction={self.fraction!r}: must be in (0, 1]")
        if not 0.0 < self.keep < 1.0:
            raise SettingsError(f"keep={self.keep!r}: the kept fraction must be in (0, 1)")
        if not 0.0 < self.density < 1.0:
            raise SettingsError(f"density={self.density!r}: must be in (0, 1)")
        if not 0.0 <= self.server_momentum < 1.0:
            raise SettingsError(f"server-momentum={self.server_momentum!r}: must be in [0, 1)")
        if self.bits not in (2, 4, 8):
            raise SettingsError(f"bits={self.bits!r}: QSGD takes 2, 4 or 8 bits per weight")
        if not 0.0 < self.topk_fraction <= 1.0:
            raise SettingsError(f"topk-fraction={self.topk_fraction!r}: must be in (0, 1]")
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
        if not 0.0 <= self.weight_momentum < 1.0:
            raise SettingsError(f"weight-momentum={self.weight_momentum!r}: must be in [0, 1)")
        if not 0.0 <= self.posterior_decay <= 1.0:
            raise SettingsError(f"posterior-decay={self.posterior_decay!r}: must be in [0, 1]")
        if not (self.margin >= 0 and math.isfinite(self.margin)):
            raise SettingsError(f"margin={self.margin!r}: must be a finite number >= 0")
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
        """The methods to run, in the given order; ``all`` means every registered one."""
        if self.methods.strip() == "all":
            from pemn_fl.methods import names

            return list(names())
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


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise SettingsError(f"{name}={value!r}: use one of {', '.join(valid)}")


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise SettingsError(f"{name}={value!r}: must be >= 1")
