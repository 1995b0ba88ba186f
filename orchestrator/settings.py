"""orchestrate.toml: where it is, what it may say, and how command-line flags override it.

Sections: `[kaggle]` (owner, api_url), `[kernel]` (what kernel-metadata.json says, plus the
local code to embed), `[run]` (a `kernel_template.config.RunConfig`), `[chain]` (read by
`orchestrate chain`) and `[notify]` (the chain's webhook, see `orchestrator.notify`). Every problem is reported as one line naming the key and the fix.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kernel_template.config import (
    ConfigError,
    RunConfig,
    describe_validation_error,
    parse_run_config,
)
from kernel_template.kaggle_limits import KAGGLE_SESSION_LIMIT_S

from .errors import UserError

CONFIG_FILE_NAME = "orchestrate.toml"

# Kaggle usernames and kernel slugs: lowercase letters, digits and single hyphens inside.
SLUG_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
OWNER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
MIN_SLUG_LENGTH = 5  # kaggle kernels push: "Kernel slug must be at least five characters"
MIN_TITLE_LENGTH = 5  # kaggle kernels push: "Title must be at least five characters"
MAX_SLUG_LENGTH = 50

# Machine shapes the official CLI names (kaggle 2.2.x help and kagglesdk docs). Retired ones are
# accepted with a warning, as the official CLI does: the server substitutes another machine.
MACHINE_SHAPES = ("NvidiaTeslaT4", "TpuV5E8")
RETIRED_MACHINE_SHAPES = {
    "NvidiaTeslaP100": "Kaggle runs it on the default GPU (NvidiaTeslaT4) instead",
    "TpuV38": "Kaggle runs it on the default TPU (TpuV5E8) instead",
    "Tpu1VmV38": "Kaggle runs it on the default TPU (TpuV5E8) instead",
    "TpuV232": "Kaggle runs it on CPU instead, with no accelerator at all",
    "TpuV2256": "Kaggle runs it on CPU instead, with no accelerator at all",
}
CPU_NAMES = ("", "none", "cpu")
DEFAULT_GPU_SESSION_CAP = 2
# The image's torch is built for its CUDA: `[kernel] pip_install` may not replace it.
NEVER_PIP_INSTALL = ("torch", "torchvision", "torchaudio")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class KaggleSettings(_Section):
    owner: str | None = Field(
        default=None,
        description="the account that owns the kernels; default: the credentials' user",
    )
    api_url: str | None = Field(
        default=None, description="API root; default ORCHESTRATE_KAGGLE_API or production"
    )
    gpu_session_cap: int = Field(
        default=DEFAULT_GPU_SESSION_CAP, ge=1, description="batch GPU sessions at once"
    )

    @field_validator("owner")
    @classmethod
    def _owner_shape(cls, value: str | None) -> str | None:
        if value is not None and not OWNER_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a Kaggle username (letters, digits, '-' and '_')")
        return value


class KernelSettings(_Section):
    slug: str | None = Field(default=None, description="kernel slug (URL name), e.g. 'ppo-traffic'")
    title: str | None = Field(default=None, description="kernel title; must slugify to the slug")
    machine_shape: str | None = Field(default="NvidiaTeslaT4", alias="accelerator")
    enable_internet: bool = True
    is_private: bool = True
    docker_image_pinning_type: Literal["original", "latest"] | None = Field(
        default="original",
        description="'original' keeps one image across a chain (pickles depend on it)",
    )
    docker_image: str | None = Field(
        default=None,
        description="run on this Kaggle image, e.g. 'gcr.io/kaggle-images/python@sha256:...';"
        " default: Kaggle's current one (a chain then pins its first segment's image)",
    )
    dataset_sources: list[str] = Field(default_factory=list)
    kernel_sources: list[str] = Field(default_factory=list)
    model_sources: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    user_modules: list[str] = Field(
        default_factory=list,
        description="local packages/modules embedded in the kernel, e.g. 'myenvs'",
    )
    pip_install: list[str] = Field(
        default_factory=list,
        description="requirements the kernel pip-installs at start (needs enable_internet); "
        "empty: it installs nothing and fails clearly when a module is missing",
    )

    @field_validator("pip_install")
    @classmethod
    def _requirements(cls, value: list[str]) -> list[str]:
        for item in value:
            name = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", item or "")
            if not name:
                raise ValueError(f"{item!r} is not a requirement; write e.g. 'sumo-rl==1.4.5'")
            if re.sub(r"[-_.]+", "-", name.group(1).lower()) in NEVER_PIP_INSTALL:
                raise ValueError(
                    f"{item!r}: never reinstall {name.group(1)} on Kaggle (the image's build "
                    "matches its CUDA; another costs gigabytes); drop it"
                )
        return value

    @field_validator("slug")
    @classmethod
    def _slug_shape(cls, value: str | None) -> str | None:
        if value is not None:
            check_slug(value)
        return value

    @field_validator("docker_image")
    @classmethod
    def _image_shape(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(c.isspace() for c in value)):
            raise ValueError(
                f"{value!r} is not an image name; use e.g. 'gcr.io/kaggle-images/python@sha256:<digest>'"
            )
        return value or None

    @field_validator("title")
    @classmethod
    def _title_length(cls, value: str | None) -> str | None:
        if value is not None and len(value) < MIN_TITLE_LENGTH:
            raise ValueError(
                f"title {value!r} is shorter than {MIN_TITLE_LENGTH} characters; lengthen it"
            )
        return value

    @field_validator("machine_shape")
    @classmethod
    def _known_shape(cls, value: str | None) -> str | None:
        return canonical_machine_shape(value)

    @property
    def is_gpu(self) -> bool:
        return is_gpu_shape(self.machine_shape)


class ChainSettings(BaseModel):
    """`[chain]`: read by the chain commands; free-form beyond these common keys."""

    model_config = ConfigDict(extra="allow")

    total_timesteps: int | None = Field(default=None, ge=1)
    segment_timesteps: int | None = Field(default=None, ge=1)
    segments: int | None = Field(default=None, ge=1)
    stall_polls: int = Field(
        default=6,
        ge=0,
        description="ALERT after this many progress checks without progress; 0: off",
    )
    stall_check_s: float = Field(
        default=300.0, ge=0, description="least seconds between two progress checks of a segment"
    )


class NotifySettings(_Section):
    """`[notify]`: a webhook that hears of segment done, chain done/failed and every ALERT."""

    url: str | None = Field(
        default=None, description="webhook URL; the environment's ORCHESTRATE_NOTIFY_URL wins"
    )
    format: Literal["slack", "discord", "ntfy"] | None = Field(
        default=None, description="payload shape; default: told by the URL's host"
    )
    events: list[Literal["segment_done", "chain_done", "chain_failed", "alert"]] = Field(
        default_factory=lambda: ["segment_done", "chain_done", "chain_failed", "alert"]
    )
    budget_s: float = Field(
        default=15.0,
        gt=0,
        le=120,
        description="most seconds one step spends posting, retries included",
    )

    @field_validator("url")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        from orchestrator.notify import check_webhook_url

        return check_webhook_url(value) if value else None

    @model_validator(mode="after")
    def _format_known(self) -> NotifySettings:
        from orchestrator.notify import webhook_format

        if self.url:
            webhook_format(self.url, self.format)  # ValueError: set format
        return self


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    kaggle: KaggleSettings = Field(default_factory=KaggleSettings)
    kernel: KernelSettings = Field(default_factory=KernelSettings)
    run: RunConfig = Field(default_factory=RunConfig)
    chain: ChainSettings = Field(default_factory=ChainSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    config_path: Path | None = Field(default=None, exclude=True)
    project_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    def require_slug(self, slug: str | None = None) -> str:
        chosen = slug or self.kernel.slug
        if not chosen and self.config_path is None:
            raise UserError(
                "no orchestrate.toml here or in any parent folder: run `orchestrate init` "
                "(or pass --config PATH)"
            )
        if not chosen:
            raise UserError("no kernel slug: set [kernel] slug in orchestrate.toml or pass --slug")
        check_slug(chosen, error=UserError)
        return chosen


def check_slug(slug: str, *, error: type[Exception] = ValueError) -> str:
    if len(slug) < MIN_SLUG_LENGTH:
        raise error(
            f"kernel slug {slug!r} is shorter than {MIN_SLUG_LENGTH} characters; lengthen it"
        )
    if len(slug) > MAX_SLUG_LENGTH:
        raise error(f"kernel slug {slug!r} is longer than {MAX_SLUG_LENGTH} characters; shorten it")
    if not SLUG_PATTERN.match(slug):
        raise error(
            f"kernel slug {slug!r} may hold only lowercase letters, digits and single inner hyphens; "
            f"try {suggest_slug(slug)!r}"
        )
    return slug


def suggest_slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-") or "my-kernel"


def canonical_machine_shape(value: str | None) -> str | None:
    """The official spelling of a machine shape, None for CPU; ValueError for an unknown name."""
    if value is None or value.strip().lower() in CPU_NAMES:
        return None
    known = {name.lower(): name for name in (*MACHINE_SHAPES, *RETIRED_MACHINE_SHAPES)}
    name = known.get(value.strip().lower())
    if name is None:
        raise ValueError(
            f"unknown accelerator {value!r}; use one of {', '.join(MACHINE_SHAPES)} or 'none' for CPU"
        )
    return name


def retired_shape_warning(shape: str | None) -> str | None:
    if shape in RETIRED_MACHINE_SHAPES:
        return f"warning: accelerator {shape!r} is retired; {RETIRED_MACHINE_SHAPES[shape]}"
    return None


def is_gpu_shape(shape: str | None) -> bool:
    return bool(shape) and shape.startswith("Nvidia")


def is_tpu_shape(shape: str | None) -> bool:
    return bool(shape) and shape.startswith("Tpu")


def find_config_file(start: Path | None = None) -> Path | None:
    """orchestrate.toml in `start` (default: cwd) or the nearest parent that has one."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def load_settings(path: str | Path | None = None, *, cwd: Path | None = None) -> Settings:
    """Settings from `path`, else from the nearest orchestrate.toml, else the defaults."""
    if path is not None:
        config_path = Path(path)
        if not config_path.is_file():
            raise UserError(
                f"config file {config_path} does not exist; run `orchestrate init` or fix --config"
            )
    else:
        config_path = find_config_file(cwd)
    if config_path is None:
        return Settings(project_dir=(cwd or Path.cwd()).resolve())
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{config_path} is not valid TOML: {error}") from None
    return settings_from_dict(data, source=str(config_path), config_path=config_path.resolve())


def settings_from_dict(
    data: dict[str, Any], *, source: str = CONFIG_FILE_NAME, config_path: Path | None = None
) -> Settings:
    data = dict(data)
    unknown = sorted(set(data) - {"kaggle", "kernel", "run", "chain", "notify"})
    if unknown:
        raise UserError(
            f"{source}: unknown section [{unknown[0]}]; the sections are [kaggle], [kernel], "
            "[run], [chain], [notify]"
        )
    try:
        run = parse_run_config(data.pop("run", {}), source=f"[run] in {source}")
    except ConfigError as error:
        raise UserError(str(error)) from None
    project_dir = config_path.parent if config_path else Path.cwd().resolve()
    try:
        return Settings(run=run, config_path=config_path, project_dir=project_dir, **data)
    except ValidationError as error:
        raise UserError(describe_validation_error(error, source=source)) from None


def apply_overrides(settings: Settings, assignments: list[str]) -> Settings:
    """Apply `section.key=value` flags (value parsed as TOML, else taken as a string)."""
    data = settings.model_dump(mode="json", by_alias=False)
    for assignment in assignments:
        name, sep, raw = assignment.partition("=")
        keys = name.strip().split(".")
        if not sep or len(keys) < 2 or not all(keys):
            raise UserError(
                f"--set {assignment!r} must read section.key=value, e.g. run.total_timesteps=2000"
            )
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        target = data
        for key in keys[:-1]:
            node = target.setdefault(key, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {assignment!r}: {key!r} is not a table")
            target = node
        target[keys[-1]] = value
    if "machine_shape" in data.get("kernel", {}) and "accelerator" in data["kernel"]:
        data["kernel"]["machine_shape"] = data["kernel"].pop("accelerator")
    return settings_from_dict(data, source="--set", config_path=settings.config_path).model_copy(
        update={"project_dir": settings.project_dir}
    )


def with_kernel_overrides(settings: Settings, **fields: Any) -> Settings:
    """A copy with [kernel]/[kaggle] fields replaced by the flags that were given (None = not given)."""
    kernel = {k: v for k, v in fields.items() if v is not None and k in KernelSettings.model_fields}
    kaggle = {k: v for k, v in fields.items() if v is not None and k in KaggleSettings.model_fields}
    try:
        new_kernel = KernelSettings.model_validate({**settings.kernel.model_dump(), **kernel})
        new_kaggle = KaggleSettings.model_validate({**settings.kaggle.model_dump(), **kaggle})
    except ValidationError as error:
        raise UserError(describe_validation_error(error, source="command-line flags")) from None
    return settings.model_copy(update={"kernel": new_kernel, "kaggle": new_kaggle})


STARTER_TOML = """\
# orchestrate.toml: what `orchestrate build/launch/chain` run. Flags override these values.
# Every key is optional unless marked; delete what you do not need.

[kaggle]
# owner = "your-kaggle-username"     # default: the user of your Kaggle credentials
# api_url = "http://127.0.0.1:7777/api/v1"   # default: production, or ORCHESTRATE_KAGGLE_API
# gpu_session_cap = 2                # Kaggle allows 2 batch GPU sessions at once

[kernel]
slug = "{slug}"                     # required: the kernel's URL name (>= 5 chars, a-z 0-9 -)
title = "{title}"                   # must slugify to the slug
accelerator = "NvidiaTeslaT4"        # NvidiaTeslaT4, TpuV5E8, or "none" for CPU
enable_internet = true               # lets the kernel pip-install what its image lacks
is_private = true
docker_image_pinning_type = "original"   # keep one image across a chain: pickles depend on it
# docker_image = "gcr.io/kaggle-images/python@sha256:..."   # default: a chain pins its first segment's
dataset_sources = []
kernel_sources = []
model_sources = []
keywords = []
user_modules = []                    # local packages to embed, e.g. ["myenvs"] for env = "myenvs.grid:GridEnv"
# pip_install = []                   # installed at start (needs enable_internet); default: nothing

[run]
algo = "DQN"                         # DQN, PPO, A2C or SAC
env = "traffic-signal"               # or a Gymnasium id, or "package.module:Class"
seed = 0
total_timesteps = 100000
checkpoint_every = 50                # steps between checkpoints ...
checkpoint_min_seconds = 10.0        # ... and at least this many seconds apart
export_every = 500
export_min_seconds = 30.0
keep_checkpoints = 2
session_limit_s = {session_limit_s}# Kaggle's 12 h limit; the kernel stops early enough to save

[run.hyperparams]                    # passed to the SB3 constructor
# learning_rate = 0.0001
# buffer_size = 100000

[run.policy_kwargs]
net_arch = [64, 64]

[chain]
# total_timesteps = 1000000          # the whole training, split across sessions
# segments = 4
# stall_polls = 6                    # ALERT when a running segment shows no progress this often
# stall_check_s = 300                # ... checked at most this often (reads its live log)

[notify]                             # a webhook hears of segments done, chain done/failed, ALERTs
# url = "https://ntfy.sh/my-secret-topic"   # or Slack/Discord webhook; env ORCHESTRATE_NOTIFY_URL wins
# format = "ntfy"                    # slack, discord or ntfy; default: told by the URL's host
# events = ["segment_done", "chain_done", "chain_failed", "alert"]
"""


def starter_toml(slug: str = "my-training-run") -> str:
    check_slug(slug, error=UserError)
    title = " ".join(word.capitalize() for word in slug.split("-"))
    return (
        STARTER_TOML.replace("{slug}", slug)
        .replace("{title}", title)
        # padded to the comment column of the lines around it
        .replace("{session_limit_s}", f"{KAGGLE_SESSION_LIMIT_S:<19.0f}")
    )
