"""Launch one kernel session: build, check, write the ledger intent, push, record the outcome.

The order is what makes a killed orchestrator harmless: the ledger learns of a run before
Kaggle does, and a slug is pushed only after the account's own kernel listing shows it absent
(`find_own_kernel`; GetKernel's 403 cannot tell absent from just pushed). A slug that is
listed is adopted instead of pushed again, whatever the ledger says: a lost ledger update
never starts a second session.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel_template.config import RunConfig
from kernel_template.layout import utc_now_iso
from orchestrator.capacity import SESSION_LIMIT_S, check_gpu_capacity
from orchestrator.kaggle.models import VISIBILITY_GRACE_S
from orchestrator.ledger import seconds_since

from .build import RuntimeBundle, default_build_dir, render_kernel, resolve_owner
from .errors import InfrastructureError, UserError
from .settings import Settings, check_slug

if TYPE_CHECKING:
    from rich.console import Console

    from .kaggle import KaggleClient
    from .ledger import Ledger, RunRecord

QUICK_SUFFIX = "-quick"
QUICK_SESSION_LIMIT_S = 3600.0  # a quick test that hangs must not burn a 12-hour session
QUICK_MINUTES = 5.0  # long enough to measure speed and costs, short enough to spend little quota
QUICK_MARGIN_SHARE = 0.1  # the most of a quick session its stop margin may take
# Refusals that mean "not now": the slug was not spent and is pushed again later.
WAIT_REFUSALS = ("capacity", "quota", "throttled")


def quick_test_variant(
    run_config: RunConfig,
    slug: str,
    *,
    steps: int | None = None,
    minutes: float = QUICK_MINUTES,
) -> tuple[RunConfig, str]:
    """A short real session of the same training, under its own `-quick` slug: it trains
    until `minutes` of session time are spent (or `steps`, when given, are done).

    A time rather than a step count: 2,000 steps of a fast env pass in 2 s, too short to
    measure anything. Intervals, logging and evaluation stay as configured, so the summary
    measures what `plan` needs (seconds per step, checkpoint and finalisation costs).
    """
    limit = min(run_config.session_limit_s, minutes * 60, QUICK_SESSION_LIMIT_S)
    margin = run_config.min_margin_s
    if margin is not None and margin > limit * QUICK_MARGIN_SHARE:
        margin = limit * QUICK_MARGIN_SHARE  # a 15-minute floor would leave no time to train
    quick = run_config.with_changes(
        total_timesteps=min(steps, run_config.total_timesteps)
        if steps
        else run_config.total_timesteps,
        segment_timesteps=None,
        segment_index=0,
        session_limit_s=limit,
        min_margin_s=margin,
    )
    return quick, slug if slug.endswith(QUICK_SUFFIX) else f"{slug}{QUICK_SUFFIX}"


def next_free_slug(ledger: Ledger, slug: str) -> str:
    """`slug`, or `slug-2`, `slug-3`, ... : the first one the ledger has not used."""
    if ledger.get(slug) is None:
        return slug
    number = 2
    while ledger.get(f"{slug}-{number}") is not None:
        number += 1
    return check_slug(f"{slug}-{number}", error=UserError)


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
    intent_grace_s: float = VISIBILITY_GRACE_S,
    bundle: RuntimeBundle | None = None,
) -> RunRecord:
    """Push one session of `run_config` as kernel `slug` and return its ledger record.

    `docker_image` (default: `[kernel] docker_image`) pins the Kaggle image it runs on.
    `intent_grace_s`: how long an unconfirmed earlier push of the slug may stay unlisted
    before it is taken as lost and the slug pushed again. `bundle`: the runtime to embed
    (a chain's, rendered at its start); by default rendered from this install.
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
        bundle=bundle,
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
        client.verify_credentials()  # a refused key is exit 2 before any intent is written
        check_gpu_capacity(settings, client, ledger, owner, shape)

    with ledger.locked():
        existing = ledger.get(slug)
        if existing is None:
            ledger.record_intent(
                RunRecord(
                    slug=slug,
                    owner=owner,
                    chain=chain,
                    segment=segment,
                    attempt=attempt,
                    config_hash=folder.config_hash,
                    machine_shape=shape,
                    docker_image=settings.kernel.docker_image,
                )
            )
        settled = _settle_before_push(
            ledger.get(slug), client, ledger, console, intent_grace_s, earlier=existing
        )
        if settled is not None:
            return settled
        spec = PushSpec.from_kernel_folder(
            folder.path, timeout=session_timeout_s(run_config.session_limit_s)
        )
        return _push(spec, client, ledger, owner, slug, console)


def session_timeout_s(session_limit_s: float) -> int | None:
    """SaveKernel's sessionTimeoutSeconds: none at (or past) Kaggle's own maximum, which a
    push for the whole session may not name."""
    limit = int(session_limit_s)
    return None if limit >= SESSION_LIMIT_S else limit


def with_docker_image(settings: Settings, docker_image: str) -> Settings:
    """A copy of `settings` whose kernels run on `docker_image`."""
    from pydantic import ValidationError

    try:
        kernel = settings.kernel.model_copy()
        kernel.docker_image = docker_image  # validated on assignment
    except ValidationError as error:
        raise UserError(error.errors()[0]["msg"].removeprefix("Value error, ")) from None
    return settings.model_copy(update={"kernel": kernel})


def _settle_before_push(
    record: RunRecord,
    client: KaggleClient,
    ledger: Ledger,
    console: Console | None,
    intent_grace_s: float,
    *,
    earlier: RunRecord | None,
) -> RunRecord | None:
    """Adopt the session Kaggle already has for this slug, or allow the push (None).

    The account's own listing decides, never GetKernel (its 403 means absent and just
    pushed alike). An earlier unconfirmed push that is not listed yet may still appear:
    within `intent_grace_s` of it nothing is pushed (InfrastructureError, retry later).
    """
    from .kaggle import AuthenticationError, CredentialsNotFound, KaggleError

    _refuse_spent_slug(earlier)
    try:
        info = client.find_own_kernel(record.owner, record.slug)
    except (AuthenticationError, CredentialsNotFound):
        raise  # refused credentials: exit 2 with the fix
    except KaggleError as error:
        raise InfrastructureError(
            f"could not list {record.owner}'s kernels to check that {record.slug} is not on "
            f"Kaggle already ({error}); nothing was pushed, run the same command again later"
        ) from None
    if info is not None:
        why = "an earlier push went through" if earlier else "the ledger had lost its push"
        _say(
            console,
            f"{record.ref} already exists on Kaggle ({why}): adopting it, not pushing again",
        )
        return ledger.update(
            record.slug,
            state="pushed",
            pushed_at=record.pushed_at or utc_now_iso(),
            version=info.current_version_number,
            url=client.web_url(record.owner, record.slug),
            failure_message=None,
            adopted_at=utc_now_iso(),
        )
    if earlier is not None and earlier.state == "intent":  # a push that may have gone through
        age = seconds_since(earlier.created_at)
        if age < intent_grace_s:
            raise InfrastructureError(
                f"the earlier push of {record.ref} is unconfirmed and Kaggle may not list a new "
                f"kernel for a while; nothing was pushed, run the same command again in "
                f"{intent_grace_s - age:.0f} s"
            )
    ledger.update(record.slug, state="intent", failure_message=None, refusal=None)
    return None


def _refuse_spent_slug(existing: RunRecord | None) -> None:
    """Kaggle shows only a slug's latest session: a pushed slug is never pushed again."""
    if existing is not None and existing.state not in ("intent", "failed_push"):
        raise UserError(
            f"run {existing.slug!r} was already pushed (state {existing.state}); pick a new slug with --slug"
        )


def _push(
    spec: Any, client: KaggleClient, ledger: Ledger, owner: str, slug: str, console: Console | None
) -> RunRecord:
    from .kaggle import AmbiguousPush, KaggleError

    try:
        result = client.push(spec)
    except AmbiguousPush as error:
        # Never push again blindly: the listing may show it (now, or within the grace).
        try:
            info = client.find_own_kernel(owner, slug)
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
        ledger.update(
            slug, state="failed_push", failure_message=str(error), refusal=refusal_kind(error)
        )
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


def refusal_kind(error: Exception) -> str:
    """Why Kaggle refused a push, as the ledger records it: `capacity`, `quota` and
    `throttled` mean "not now" (WAIT_REFUSALS); `image` and `rejected` count as failures."""
    from .kaggle import CapacityRefused, DockerImageRefused, QuotaExhausted, Throttled

    if isinstance(error, CapacityRefused):
        return "capacity"
    if isinstance(error, QuotaExhausted):
        return "quota"
    if isinstance(error, Throttled):
        return "throttled"
    if isinstance(error, DockerImageRefused):
        return "image"
    return "rejected"


def _say(console: Console | None, text: str) -> None:
    if console is not None:
        console.print(text, markup=False)
