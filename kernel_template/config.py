"""The run config (DESIGN contract 1): one model shared by the kernel and the orchestrator.

Imports only the standard library and pydantic, so the orchestrator can validate and hash
configs without loading torch or stable-baselines3.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kernel_template.kaggle_limits import KAGGLE_SESSION_LIMIT_S

ALGORITHMS = ("DQN", "PPO", "A2C", "SAC")
DEFAULT_ENV = "traffic-signal"

# The fields that change what training produces. Everything else (budget, intervals,
# logging, evaluation, segment bookkeeping) can differ between segments of one run.
RESULT_FIELDS = (
    "algo",
    "env",
    "env_kwargs",
    "n_envs",
    "policy",
    "policy_kwargs",
    "hyperparams",
    "seed",
    "total_timesteps",
)
# Result fields of a user loop (`entrypoint`), hashed only when set so that every SB3
# config keeps the hash it had before user loops existed.
LOOP_RESULT_FIELDS = ("entrypoint", "params")


class ConfigError(ValueError):
    """A run config that cannot be used; the message is one line naming the problem and the fix."""

    exit_code = 2  # bad input, as orchestrator.errors.ExitCode says (the kernel cannot import it)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TagThrottle(_Strict):
    """How often one log tag may print: every N steps, only on change, or a sampled fraction."""

    every_steps: int | None = Field(default=None, ge=1)
    on_change: bool = False
    sample: float | None = Field(default=None, gt=0, le=1)


class LoggingConfig(_Strict):
    progress_every_s: float = Field(
        default=5.0, gt=0, description="least seconds between progress events"
    )
    progress_every_steps: int = Field(
        default=1000, ge=1, description="least steps between progress events"
    )
    max_lines_per_step: float = Field(
        default=0.5, gt=0, description="budget of log lines per training step"
    )
    tags: dict[str, TagThrottle] = Field(default_factory=dict, description="per-tag throttles")
    tensorboard: bool = True


class EvaluationConfig(_Strict):
    best_model_episodes: int = Field(
        default=2, ge=1, description="episodes of the periodic best-model check"
    )
    final_episodes: int = Field(
        default=5, ge=1, description="episodes of the final agent-vs-baselines evaluation"
    )
    seeds_base: int = Field(
        default=10_000, description="evaluation seeds are seeds_base + i, apart from training"
    )


# Kaggle kills a session at its limit with SIGKILL, no grace: the stop margin's floor is a
# share of the session (900 s of 12 h), proportionally less for the short sessions of tests.
MARGIN_FLOOR_FRACTION = 1 / 48


def stop_margin_floor_s(session_limit_s: float, min_margin_s: float | None = None) -> float:
    """The floor of the stop margin, used by the kernel's budget and by `orchestrate plan`:
    `min_margin_s` when set, else `session_limit_s / 48`. Learned end costs come on top."""
    if min_margin_s is not None:
        return float(min_margin_s)
    return session_limit_s * MARGIN_FLOOR_FRACTION


class ParentRef(_Strict):
    """The checkpoint a chain segment continues: the parent kernel (or dataset) and the
    manifest it holds.

    Not a result field: it names where the state comes from, not what training does."""

    owner: str = Field(min_length=1)
    slug: str = Field(min_length=1)
    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    step: int = Field(ge=0)
    kind: Literal["kernel", "dataset"] = Field(
        default="kernel",
        description="a kernel's output (kernel_sources) or a dataset uploaded from a local "
        "checkpoint (dataset_sources)",
    )

    @field_validator("owner", "slug")
    @classmethod
    def _one_path_part(cls, value: str) -> str:
        if "/" in value or value in (".", "..") or "\\" in value:
            raise ValueError(f"{value!r} must be a single name (no '/')")
        return value


class RunConfig(_Strict):
    """Everything one training run needs. Embedded as JSON in the kernel, copied into its outputs."""

    algo: Literal["DQN", "PPO", "A2C", "SAC"] = "DQN"
    env: str = Field(default=DEFAULT_ENV, min_length=1)
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    n_envs: int = Field(default=1, ge=1, le=64)
    policy: str = "MlpPolicy"
    policy_kwargs: dict[str, Any] = Field(default_factory=dict)
    hyperparams: dict[str, Any] = Field(
        default_factory=dict, description="passed to the SB3 constructor"
    )
    seed: int = 0
    trainer: Literal["sb3", "loop"] = Field(
        default="sb3",
        description="who trains: 'sb3' (the stable-baselines3 trainer) or 'loop' (the user's "
        "own loop named by entrypoint; implied when entrypoint is set)",
    )
    entrypoint: str | None = Field(
        default=None,
        description="'package.module:function' of a [kernel] user_modules module: the "
        "function receives the kernel Session and runs its own loop (None: the SB3 trainer)",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="the user loop's hyperparameters (session.params)"
    )
    total_timesteps: int = Field(default=100_000, ge=1)
    segment_timesteps: int | None = Field(
        default=None, ge=1, description="most steps this session trains"
    )

    checkpoint_every: int = Field(default=50, ge=1, description="steps between checkpoints")
    checkpoint_min_seconds: float = Field(
        default=10.0, ge=0, description="least seconds between checkpoints"
    )
    keep_checkpoints: int = Field(default=2, ge=1)
    export_every: int = Field(default=500, ge=1, description="steps between intermediate exports")
    export_min_seconds: float = Field(
        default=30.0, ge=0, description="least seconds between exports"
    )

    session_limit_s: float = Field(
        default=KAGGLE_SESSION_LIMIT_S, gt=0, description="the platform's session limit"
    )
    min_margin_s: float | None = Field(
        default=None,
        ge=0,
        description="floor of the stop margin; the measured cost is added on top. "
        "None: session_limit_s / 48 (15 min of a 12 h session): Kaggle SIGKILLs at the limit",
    )
    parent_wait_s: float = Field(
        default=30.0,
        ge=0,
        description="how long a segment re-checks its inputs for the parent checkpoint",
    )

    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    allow_config_change: list[str] = Field(
        default_factory=list,
        description="result fields a resume may change, e.g. hyperparams.learning_rate",
    )
    segment_index: int = Field(default=0, ge=0)
    parent: ParentRef | None = Field(
        default=None,
        description="the checkpoint this segment must resume from (set by the chain)",
    )

    @field_validator("env")
    @classmethod
    def _env_shape(cls, value: str) -> str:
        if ":" in value:
            module, _, attr = value.partition(":")
            if not module or not attr or not all(p.isidentifier() for p in module.split(".")):
                raise ValueError(f"env {value!r} must look like 'package.module:Class'")
        return value

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_shape(cls, value: str | None) -> str | None:
        if value is None:
            return value
        module, _, function = value.partition(":")
        if not (
            module
            and function.isidentifier()
            and all(part.isidentifier() for part in module.split("."))
        ):
            raise ValueError(f"entrypoint {value!r} must look like 'package.module:function'")
        return value

    @field_validator("hyperparams")
    @classmethod
    def _hyperparams_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        for reserved in ("env", "policy", "seed", "device", "verbose", "tensorboard_log"):
            if reserved in value:
                raise ValueError(
                    f"hyperparams must not set {reserved!r}: use the top-level field instead"
                )
        return value

    @model_validator(mode="before")
    @classmethod
    def _entrypoint_implies_loop(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("entrypoint") and "trainer" not in data:
            return {**data, "trainer": "loop"}
        return data

    @model_validator(mode="after")
    def _trainer_matches_entrypoint(self) -> RunConfig:
        if self.trainer == "loop" and self.entrypoint is None:
            raise ValueError(
                'trainer = "loop" needs entrypoint = "package.module:function"; add it, '
                "or drop trainer for the SB3 trainer"
            )
        if self.trainer == "sb3" and self.entrypoint is not None:
            raise ValueError(
                f'entrypoint {self.entrypoint!r} is a user loop but trainer = "sb3"; '
                'drop trainer (or write trainer = "loop")'
            )
        return self

    @model_validator(mode="after")
    def _segment_within_total(self) -> RunConfig:
        if self.segment_timesteps is not None and self.segment_timesteps > self.total_timesteps:
            raise ValueError(
                "segment_timesteps is larger than total_timesteps; lower it or drop it"
            )
        return self

    @property
    def margin_floor_s(self) -> float:
        """The stop margin's floor in seconds: `min_margin_s`, or a share of the session."""
        return stop_margin_floor_s(self.session_limit_s, self.min_margin_s)

    def result_fields(self) -> dict[str, Any]:
        """The part of the config that decides the training result."""
        data = self.model_dump(mode="json")
        fields = {name: data[name] for name in RESULT_FIELDS}
        if self.entrypoint is not None:
            fields.update({name: data[name] for name in LOOP_RESULT_FIELDS})
        return fields

    def with_changes(self, **changes: Any) -> RunConfig:
        """A copy with `changes`, validated once (`model_copy(update=...)` skips validation)."""
        return RunConfig.model_validate({**self.model_dump(), **changes})

    def config_hash(self) -> str:
        """sha256 over the result fields in canonical JSON (sorted keys, no spaces). Compute it
        once per config and carry the value (KernelFolder, ChainRecord, RunRecord, the
        checkpoint writer): the kernel and the orchestrator each validate a config once."""
        canonical = json.dumps(self.result_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):  # an empty dict contributes no fields
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value


def diff_result_fields(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Dotted names of the result fields that differ between two `result_fields()` dicts."""
    flat_a: dict[str, Any] = {}
    flat_b: dict[str, Any] = {}
    _flatten("", a, flat_a)
    _flatten("", b, flat_b)
    return sorted(
        k for k in flat_a.keys() | flat_b.keys() if flat_a.get(k, ...) != flat_b.get(k, ...)
    )


def changes_allowed(differing: list[str], allowed: list[str]) -> list[str]:
    """The differing fields not covered by `allowed` (a name covers itself and its sub-fields)."""
    return [d for d in differing if not any(d == a or d.startswith(a + ".") for a in allowed)]


def describe_validation_error(error: ValidationError, source: str = "run config") -> str:
    """One line naming each bad field and what is wrong with it."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown key {where!r} (remove it or check its spelling)")
        else:
            # pydantic prefixes messages raised by validators; ours are already sentences.
            message = item["msg"].removeprefix("Value error, ")
            parts.append(f"{where}: {message}")
    return f"invalid {source}: " + "; ".join(parts)


def parse_run_config(data: Any, source: str = "run config") -> RunConfig:
    """Validate a dict into a RunConfig, raising ConfigError with a one-line message."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, source)) from None


def load_run_config(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"run config {path} does not exist; pass --config with a JSON file"
        ) from None
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"run config {path} is not valid JSON (line {error.lineno}): {error.msg}"
        ) from None
    return parse_run_config(data, source=f"run config {path}")


def default_run_config() -> RunConfig:
    return RunConfig()
