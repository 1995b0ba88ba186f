"""Launch one kernel session: build, check, write the ledger intent, push, record the outcome.

The order is what makes a killed orchestrator harmless: the ledger learns of a run before
Kaggle does, and a run left as `intent` (a crash, an ambiguous push) is settled by asking
Kaggle (`get_kernel`) before anything is pushed again.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel_template.config import RunConfig
from kernel_template.layout import utc_now_iso

from .build import default_build_dir, render_kernel, resolve_owner
from .errors import InfrastructureError, UserError
from .settings import Settings, check_slug, is_gpu_shape

if TYPE_CHECKING:
    from rich.console import Console

    from .kaggle import KaggleClient
    from .ledger import Ledger, RunRecord

QUICK_SUFFIX = "-quick"
QUICK_SESSION_LIMIT_S = 3600.0  # a quick test that hangs must not burn a 12-hour session
TERMINAL = ("COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED")


def quick_test_variant(
    run_config: RunConfig, slug: str, *, steps: int = 2000
) -> tuple[RunConfig, str]:
    """A short real session of the same training: few steps, its own `-quick` slug.

    Intervals, logging and evaluation stay as configured, so the session's summary measures
    what `plan` needs (seconds per step, checkpoint and finalisation costs).
    """
    quick = run_config.model_copy(
        update={
            "total_timesteps": min(steps, run_config.total_timesteps),
            "segment_timesteps": None,
            "segment_index": 0,
            "session_limit_s": min(run_config.session_limit_s, QUICK_SESSION_LIMIT_S),
        }
    )
    quick = RunConfig.model_validate(quick.model_dump())
    return quick, slug if slug.endswith(QUICK_SUFFIX) else f"{slug}{QUICK_SUFFIX}"


def next_free_slug(ledger: Ledger, slug: str) -> str:
    """`slug`, or `slug-2`, `slug-3`, ... : the first one the ledger has not used."""
    if ledger.get(slug) is None:
        return slug
    number = 2
    while ledger.get(f"{slug}-{number}") is not None:
        number += 1
    return check_slug(f"{slug}-{number}", error=UserError)


def running_gpu_sessions(ledger: Ledger, client: KaggleClient, owner: str) -> list[str]:
    """This account's GPU runs (known to the ledger) that Kaggle still reports as not finished."""
    from .kaggle import NotFoundError

    running = []
    for record in ledger.runs():
        if record.owner != owner or record.state not in ("pushed", "running"):
            continue
        if not is_gpu_shape(record.machine_shape):
            continue
        try:
            status = client.status(record.owner, record.run)
        except NotFoundError:
            continue
        if status.status not in TERMINAL:
            running.append(record.run)
    return running


def check_capacity(
    settings: Settings, client: KaggleClient, ledger: Ledger, owner: str, shape: str | None
) -> None:
    """Refuse before the push, with the errors Kaggle's own refusal would raise (exit 3), when
    the GPU quota is spent or every GPU slot is taken by a run this ledger knows."""
    from .kaggle import CapacityRefused, QuotaExhausted

    if not is_gpu_shape(shape):
        return
    quota = client.quota()
    if quota.total_allowed_s > 0 and quota.remaining_s <= 0:
        refresh = (
            f"; it refreshes at {quota.refresh_time:%Y-%m-%d %H:%M} UTC"
            if quota.refresh_time
            else ""
        )
        raise QuotaExhausted(
            f"the weekly GPU quota of {owner} is spent{refresh}; launch again then"
        )
    running = running_gpu_sessions(ledger, client, owner)
    cap = settings.kaggle.gpu_session_cap
    if len(running) >= cap:
        raise CapacityRefused(
            f"{len(running)} GPU sessions of {owner} are running ({', '.join(running)}) and Kaggle allows "
            f"{cap} at once; wait for one to end (orchestrate watch {running[0]})",
            limit=cap,
        )


def launch(
    settings: Settings,
    run_config: RunConfig,
    *,
    client: KaggleClient,
    ledger: Ledger,
    slug: str | None = None,
    kernel_sources: tuple[str, ...] | list[str] = (),
    chain: str | None = None,
    segment: int | None = None,
    attempt: int = 0,
    preflight: bool = True,
    console: Console | None = None,
    out_dir: Path | None = None,
    docker_image: str | None = None,
) -> RunRecord:
    """Push one session of `run_config` as kernel `slug` and return its ledger record.

    `docker_image` (default: `[kernel] docker_image`) pins the Kaggle image it runs on.
    """
    from .kaggle import PushSpec
    from .ledger import RunRecord

    if docker_image:
        settings = with_docker_image(settings, docker_image)
    slug = settings.require_slug(slug)
    _refuse_spent_slug(ledger.get(slug))  # before rendering over the folder it was pushed from
    owner = resolve_owner(settings, settings.kaggle.owner or client.username)
    shape = settings.kernel.machine_shape
    folder = render_kernel(
        settings,
        run_config,
        slug=slug,
        kernel_sources=kernel_sources,
        out_dir=out_dir or default_build_dir(settings, slug),
        owner=owner,
    )
    for warning in folder.warnings:
        _say(console, warning)

    if preflight:
        from .preflight import run_preflight

        report = run_preflight(
            settings, run_config, client=client, ledger=ledger, slug=slug, folder=folder
        )
        if console is not None:
            report.print(console)
        report.raise_for_failure()
    else:
        check_capacity(settings, client, ledger, owner, shape)

    with ledger.locked():
        existing = ledger.get(slug)
        if existing is not None:
            settled = _settle_earlier_attempt(existing, client, ledger, console)
            if settled is not None:
                return settled
        else:
            ledger.record_intent(
                RunRecord(
                    run=slug,
                    owner=owner,
                    chain=chain,
                    segment=segment,
                    attempt=attempt,
                    config_hash=folder.config_hash,
                    machine_shape=shape,
                    docker_image=settings.kernel.docker_image,
                )
            )
        spec = PushSpec.from_kernel_folder(folder.path, timeout=int(run_config.session_limit_s))
        return _push(spec, client, ledger, owner, slug, console)


def with_docker_image(settings: Settings, docker_image: str) -> Settings:
    """A copy of `settings` whose kernels run on `docker_image`."""
    from pydantic import ValidationError

    try:
        kernel = settings.kernel.model_copy()
        kernel.docker_image = docker_image  # validated on assignment
    except ValidationError as error:
        raise UserError(error.errors()[0]["msg"].removeprefix("Value error, ")) from None
    return settings.model_copy(update={"kernel": kernel})


def _settle_earlier_attempt(
    existing: RunRecord, client: KaggleClient, ledger: Ledger, console: Console | None
) -> RunRecord | None:
    """A slug already in the ledger: adopt the session Kaggle has, or allow the push; else refuse."""
    _refuse_spent_slug(existing)
    info = client.get_kernel(existing.owner, existing.run)
    if info is not None:
        _say(
            console,
            f"{existing.ref} already exists on Kaggle (an earlier push went through): not pushing again",
        )
        return ledger.update(
            existing.run,
            state="pushed",
            pushed_at=existing.pushed_at or utc_now_iso(),
            version=info.current_version_number,
            url=client.web_url(existing.owner, existing.run),
            failure_message=None,
        )
    ledger.update(existing.run, state="intent", failure_message=None)
    return None


def _refuse_spent_slug(existing: RunRecord | None) -> None:
    """Kaggle shows only a slug's latest session: a pushed slug is never pushed again."""
    if existing is not None and existing.state not in ("intent", "failed_push"):
        raise UserError(
            f"run {existing.run!r} was already pushed (state {existing.state}); pick a new slug with --slug"
        )


def _push(
    spec: Any, client: KaggleClient, ledger: Ledger, owner: str, slug: str, console: Console | None
) -> RunRecord:
    from .kaggle import AmbiguousPush, KaggleError

    try:
        result = client.push(spec)
    except AmbiguousPush as error:
        # Never push again blindly: ask Kaggle whether this push made the kernel.
        try:
            info = client.get_kernel(owner, slug)
        except KaggleError:
            info = None
        if info is None:
            ledger.update(slug, failure_message=f"ambiguous push: {error}")
            raise InfrastructureError(
                f"the push of {owner}/{slug} may or may not have reached Kaggle ({error}); "
                f"run the same launch again later: it asks Kaggle before pushing"
            ) from None
        return ledger.update(
            slug,
            state="pushed",
            pushed_at=utc_now_iso(),
            version=info.current_version_number,
            url=client.web_url(owner, slug),
            failure_message=None,
        )
    except KaggleError as error:
        # The client raises these only when Kaggle surely did not take the push.
        ledger.update(slug, state="failed_push", failure_message=str(error))
        raise
    fields: dict[str, Any] = {}
    if result.invalid_sources:
        fields["invalid_sources"] = result.invalid_sources
        _say(console, f"warning: Kaggle could not attach these sources: {result.invalid_sources}")
    return ledger.update(
        slug,
        state="pushed",
        pushed_at=utc_now_iso(),
        version=result.version_number,
        url=result.url,
        failure_message=None,
        **fields,
    )


def _say(console: Console | None, text: str) -> None:
    if console is not None:
        console.print(text, markup=False)
