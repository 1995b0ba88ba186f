"""`chain step`: one idempotent advance of a chain, safe to run from cron at any moment.

Under the ledger lock it asks `machine.next_action` what to do, does it, writes the ledger,
and asks again, until the chain waits, runs, is done, or a segment was pushed. Every write
happens before the next irreversible act, so a SIGKILL anywhere leaves a ledger from which
the next step continues without pushing anything twice:

* push: `launch()` writes the intent before the push; an intent found later is settled with
  the account's own kernel listing, never GetKernel (whose 403 means absent and just pushed
  alike): listed, it was pushed; unlisted past `intent_grace_s`, that slug is burnt and the
  next attempt gets a new one;
* status: re-read on every step; terminal is recorded before the pull;
* pull: into `runs/<slug>/` through a staging dir (rename at the end), recorded afterwards.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

from kernel_template import layout
from kernel_template.config import RunConfig
from orchestrator.capacity import gpu_slots
from orchestrator.chain import early_failure, machine
from orchestrator.chain.machine import (
    Finish,
    Idle,
    Poll,
    Pull,
    Push,
    ResolveIntent,
    Wait,
)
from orchestrator.chain.states import ChainState, StepOutcome, StepResult
from orchestrator.errors import InfrastructureError, UserError
from orchestrator.kaggle.errors import (
    AuthenticationError,
    BadRequest,
    CapacityRefused,
    DockerImageRefused,
    KaggleError,
    KernelNotVisible,
    QuotaExhausted,
    Throttled,
)
from orchestrator.ledger import ChainRecord, Ledger, RunRecord, StartPoint
from orchestrator.settings import Settings, is_gpu_shape

MAX_ACTIONS_PER_STEP = 12
DEFAULT_LOCK_TIMEOUT_S = 10.0
MAX_PULL_FAILURES = 5
PARENT_REASONS = (layout.PARENT_MISSING_REASON, layout.PARENT_REQUIRED_REASON)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def pull_dir(settings: Settings, slug: str) -> Path:
    """Where a segment's outputs land: the same `runs/<slug>/` as `orchestrate pull-artifacts`."""
    return settings.project_dir / "runs" / slug


def _default_launch(*args, **kwargs) -> RunRecord:
    from orchestrator.launch import launch

    return launch(*args, **kwargs)


def _default_pull(client, owner: str, slug: str, dest: Path):
    from orchestrator.artifacts import pull_artifacts

    return pull_artifacts(client, owner, slug, dest)


class ChainStepper:
    """Carries out the machine's actions against one client, ledger and settings."""

    def __init__(
        self,
        settings: Settings,
        client,
        ledger: Ledger,
        *,
        err: TextIO | None = None,
        clock: Callable[[], datetime] = utc_now,
        launch: Callable[..., RunRecord] = _default_launch,
        pull: Callable[..., Any] = _default_pull,
        notifier=None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.ledger = ledger
        self.err = err if err is not None else sys.stderr
        self.clock = clock
        self.launch = launch
        self.pull = pull
        if notifier is None:
            from orchestrator.notify import notifier_for

            credentials = getattr(client, "credentials", None)
            notifier = notifier_for(settings, redact=getattr(credentials, "redact", None))
        self.notifier = notifier

    # -- the loop ------------------------------------------------------------------------

    def step(self, name: str, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> StepResult:
        from orchestrator.chain.events import before_step
        from orchestrator.chain.names import require_chain
        from orchestrator.ledger import LedgerBusy

        require_chain(self.ledger, name)  # never created here: a misspelt name is exit 2
        try:
            with self.ledger.locked(timeout=lock_timeout):
                before = before_step(self.ledger, name)
                result = self._step_locked(name)
        except LedgerBusy as error:
            return StepResult(name, StepOutcome.BUSY, str(error))
        self._notify(before, result)  # after the lock: a slow webhook never holds up a step
        return result

    def _notify(self, before, result: StepResult) -> None:
        """Post what this step did ([notify]); an undelivered post is noted, never fatal."""
        from orchestrator.chain.events import step_events

        for failure in self.notifier.send(step_events(self.ledger, before, result)):
            self._say(f"warning: chain {result.chain}: {failure}")
            self.ledger.note(result.chain, failure, "warning")

    def _step_locked(self, name: str) -> StepResult:
        self._alerts: list[str] = []
        self._settle_others()
        result = self._advance(name)
        result.alerts = [*self._alerts, *(a for a in result.alerts if a not in self._alerts)]
        return result

    def _advance(self, name: str) -> StepResult:
        pushed: list[str] = []
        for _ in range(MAX_ACTIONS_PER_STEP):
            chain = self.ledger.get_chain(name)
            runs = self.ledger.runs(name)
            action = machine.next_action(chain, runs, self.clock())
            if isinstance(action, Idle):
                return StepResult(name, StepOutcome.of_finished(chain.state), action.reason)
            if isinstance(action, Finish):
                return self._finish(chain, action)
            if isinstance(action, Wait):
                return StepResult(name, StepOutcome.WAITING, action.reason, until=action.until)
            if isinstance(action, ResolveIntent):
                result = self._resolve_intent(chain, action.run)
            elif isinstance(action, Poll):
                result = self._poll(chain, action.run)
            elif isinstance(action, Pull):
                result = self._pull(chain, action.run, runs)
            elif isinstance(action, Push):
                result = self._push(chain, action, runs)
                if result.outcome is StepOutcome.ADVANCED:
                    pushed.append(action.slug)
                    result.pushed = pushed
            else:  # pragma: no cover - the machine returns only the actions above
                raise AssertionError(action)
            if result is not None:
                return result
        return StepResult(
            name, StepOutcome.ADVANCED, "step made its largest number of moves; run it again"
        )

    def record_hand_pull(self, slug: str) -> None:
        """`orchestrate pull-artifacts` of a chain's segment: recorded as the chain's own pull
        would be (the verified copy in runs/<slug>/ is reused, nothing is downloaded again),
        with the checkpoint step that decides what the next segment resumes from."""
        from orchestrator.settle import settle_runs

        with self.ledger.locked():
            self._alerts = []
            settle_runs(self.ledger, self.client, select=lambda r: r.slug == slug)
            run = self.ledger.get(slug)
            if run is None or run.chain is None or run.state != "terminal":
                return
            self._pull(self.ledger.get_chain(run.chain), run, self.ledger.runs(run.chain))

    # -- actions -------------------------------------------------------------------------

    def _finish(self, chain: ChainRecord, action: Finish) -> StepResult:
        chain.state = action.state
        chain.wait_until = None
        chain.waiting_reason = None
        chain.note(action.reason, "info" if action.state is ChainState.DONE else "alert")
        self.ledger.save_chain(chain)
        if action.state is ChainState.FAILED:
            self._say(f"chain {chain.name} failed: {action.reason}")
        return StepResult(chain.name, StepOutcome.of_finished(action.state), action.reason)

    def _resolve_intent(self, chain: ChainRecord, run: RunRecord) -> StepResult | None:
        """A push was written down but never confirmed: the account's listing says whether
        Kaggle has it (GetKernel's 403 cannot tell absent from just pushed)."""
        try:
            info = self.client.find_own_kernel(run.owner, run.slug)
        except AuthenticationError:
            raise
        except KaggleError as error:
            return self._unknown(chain, f"could not check whether {run.ref} was pushed", error)
        self._known(chain)
        age = self.clock() - (machine.parse_time(run.created_at) or self.clock())
        if info is None and age.total_seconds() < chain.intent_grace_s:
            # A push only just sent may not be listed yet: ask again before giving up on it,
            # or a second session could start under the next slug.
            return StepResult(
                chain.name,
                StepOutcome.WAITING,
                f"{run.ref}: push not listed on Kaggle yet; checking again",
            )
        if info is None:
            self.ledger.update(
                run.slug,
                state="failed_push",
                failure_message=(
                    f"the push never reached Kaggle (not listed {chain.intent_grace_s:.0f} s on)"
                ),
            )
            self.ledger.note(
                chain.name,
                f"{run.ref}: push never reached Kaggle; the next attempt gets a new slug",
            )
        else:
            self.ledger.update(
                run.slug,
                state="pushed",
                version=info.current_version_number,
                pushed_at=run.pushed_at or layout.utc_now_iso(),
            )
            self.ledger.note(chain.name, f"{run.ref}: unconfirmed push found on Kaggle (listed)")
        return None

    def _poll(self, chain: ChainRecord, run: RunRecord) -> StepResult | None:
        try:
            status = self.client.status(run.owner, run.slug)
        except KernelNotVisible as error:
            return self._denied(chain, run, error)
        except AuthenticationError:
            raise
        except KaggleError as error:
            return self._unknown(chain, f"status of {run.ref} unreadable", error)
        self._known(chain)
        if not status.is_terminal:
            if run.state != "running" or run.kernel_status != status.status:
                self.ledger.update(run.slug, state="running", kernel_status=status.status)
            if status.status == "RUNNING":
                self._check_progress(chain, run)
            return StepResult(
                chain.name, StepOutcome.RUNNING, f"{run.ref} is {status.status}", running=run.ref
            )
        self.ledger.update(
            run.slug,
            state="terminal",
            kernel_status=status.status,
            failure_message=status.failure_message,
            terminal_at=run.terminal_at or layout.utc_now_iso(),
        )
        return None

    def _check_progress(self, chain: ChainRecord, run: RunRecord) -> None:
        """The stall ALERT: no training progress in `[chain] stall_polls` checks."""
        from orchestrator.chain import stall

        alert = stall.check(
            self.client,
            self.ledger,
            run,
            polls=self.settings.chain.stall_polls,
            every_s=self.settings.chain.stall_check_s,
            now=self.clock(),
        )
        if alert is not None:
            self._alerts.append(alert)
            self.ledger.note(chain.name, alert, "alert")
            self._say(f"ALERT chain {chain.name}: {alert}")

    def _denied(self, chain: ChainRecord, run: RunRecord, error: KaggleError) -> StepResult:
        """Kaggle denies reads of a kernel we pushed: normal for a while after the push (the
        read-after-write lag), then worth saying plainly what it may mean."""
        since = machine.parse_time(run.pushed_at) or machine.parse_time(run.created_at)
        age = (self.clock() - since).total_seconds() if since else float("inf")
        if age < chain.intent_grace_s:
            return StepResult(
                chain.name,
                StepOutcome.RUNNING,
                f"{run.ref} pushed {age:.0f} s ago, not visible on Kaggle yet (403 during "
                "the read-after-write lag); polling on",
                running=run.ref,
            )
        self.client.verify_credentials()  # a refused key is exit 2 with its fix, not a stall
        return self._unknown(
            chain,
            f"Kaggle has denied reads of {run.ref} for {age:.0f} s since its push (403): it may "
            "have been deleted on kaggle.com, or be hidden from this account",
            error,
        )

    def _pull(self, chain: ChainRecord, run: RunRecord, runs: list[RunRecord]) -> StepResult | None:
        dest = pull_dir(self.settings, run.slug)
        try:
            result = self.pull(self.client, run.owner, run.slug, dest)
        except AuthenticationError:
            raise  # refused credentials: exit 2 with the fix, never "unknown" (3) for ever
        except KaggleError as error:
            return self._unknown(chain, f"pulling {run.ref} failed", error)
        self._known(chain)
        if Path(result.dir).resolve() != dest.resolve():  # rejected: a download did not verify
            failures = run.pull_failures + 1
            self.ledger.update(run.slug, pull_failures=failures)
            problems = "; ".join(result.problems[:3])
            message = f"outputs of {run.ref} did not verify ({problems}); the next step pulls again"
            if failures >= MAX_PULL_FAILURES:
                return self._alert(
                    chain, f"{failures} pulls of {run.ref} did not verify: {problems}"
                )
            self.ledger.note(chain.name, message, "warning")
            return StepResult(chain.name, StepOutcome.WAITING, message)

        summary, checkpoint = result.summary, result.checkpoint
        expected = machine.start_point(runs, before=run, start=chain.start_from)
        early_error = self._early_error(run, summary)
        self.ledger.update(
            run.slug,
            early_error=early_error,
            state="pulled",
            pulled_dir=str(dest),
            pulled_at=layout.utc_now_iso(),
            artifacts_sha256=result.artifacts_sha256,
            checkpoint=checkpoint,
            summary=summary,
            gpu_seconds=session_gpu_seconds(run, summary),
        )
        what = (
            f"{run.ref} {run.kernel_status}: checkpoint at step {checkpoint.step}"
            if checkpoint is not None
            else (f"{run.ref} {run.kernel_status}: no checkpoint")
        )
        if not result.verified:
            what += " (no artifacts.zip: the session ended before finalizing; checkpoints verified one by one)"
        self.ledger.note(chain.name, what)
        if early_error:  # the machine finishes the chain as failed; say why loudly, once
            self._alert(
                chain,
                f"{run.ref} failed before its first training step: {early_error}; the chain "
                "stops instead of retrying",
            )
            return None
        reason = summary.reason if summary else None
        if summary is not None and summary.status == "error" and reason in PARENT_REASONS:
            # Kaggle had not attached the parent's output yet (or a later segment lost its
            # parent): the segment did not train; try it again after a delay, never from scratch.
            until = self.clock() + timedelta(seconds=chain.parent_retry_s)
            return self._wait(
                chain,
                f"{run.ref} stopped at once: {reason} ({expected.ref if expected else 'none'}); "
                f"the segment is pushed again after {machine.iso(until)}",
                until,
            )
        mismatch = machine.resume_mismatch(expected, summary)
        if mismatch:  # worth a human look, but the checkpoint itself verified: carry on
            self._alert(chain, f"{run.ref} {mismatch}")
        self._check_versions(chain.name, run, summary.versions if summary else None)
        return None

    def _early_error(self, run: RunRecord, summary: layout.SessionSummary | None) -> str | None:
        """The error a session stopped on before training: its summary's, else (no summary:
        it crashed too early to write one) the last error line of its log."""
        if summary is not None:
            return early_failure.from_summary(summary)
        try:
            entries = self.client.list_output(run.owner, run.slug).log
        except AuthenticationError:
            raise
        except KaggleError:
            return None  # no log to judge by: an ordinary failed attempt
        return early_failure.from_log(entries, run.kernel_status)

    def _check_versions(self, name: str, run: RunRecord, versions: dict | None) -> None:
        """The first segment that reports its versions fixes them (and the image later segments
        are pushed with); any later difference is an alert, since pickles depend on them."""
        reported = machine.pinned_versions(versions)
        if not reported:
            return  # no summary: nothing to pin or compare
        chain = self.ledger.get_chain(name)
        image = reported.get("docker_image")
        if chain.reference_versions is None:
            chain.reference_versions = reported
            chain.reference_run = run.slug
            if chain.docker_image is None and image:
                chain.docker_image = image
                chain.note(f"{run.ref} ran on {image}: later segments are pushed with it")
            self.ledger.save_chain(chain)
            if image and image != chain.docker_image:
                self._alert(
                    chain,
                    f"{run.ref} ran on {image}, not the configured {chain.docker_image}: "
                    "Kaggle did not honour the pinned image",
                )
            return
        drift = machine.version_drift(chain.reference_versions, reported)
        if drift:
            self._alert(
                chain,
                f"{run.ref} ran on other versions than {chain.reference_run} ({'; '.join(drift)}): "
                "checkpoints pickled on one may not load, or resume exactly, on the other",
            )

    def _push(self, chain: ChainRecord, push: Push, runs: list[RunRecord]) -> StepResult | None:
        run_config = segment_run_config(
            chain, push.segment, push.segment_timesteps, parent=push.start
        )
        gate = self._parent_gone(chain, push) or self._gates(chain, push, run_config)
        if gate is not None:
            return gate
        settings = self.settings
        if chain.image_unpinned and settings.kernel.docker_image:
            kernel = settings.kernel.model_copy(update={"docker_image": None})
            settings = settings.model_copy(update={"kernel": kernel})
        if push.dataset_sources:  # a checkpoint uploaded by `--from`: attach the dataset
            from orchestrator.chain.start_point import dataset_gate, with_dataset_sources

            gate = dataset_gate(self, chain)
            if gate is not None:
                return gate
            settings = with_dataset_sources(settings, push.dataset_sources)
        from orchestrator.chain.bundle import load_bundle

        bundle = load_bundle(self.ledger, chain)  # only the run config differs per segment
        try:
            record = self.launch(
                settings,
                run_config,
                client=self.client,
                ledger=self.ledger,
                slug=push.slug,
                kernel_sources=push.kernel_sources,
                chain=chain.name,
                segment=push.segment,
                attempt=push.attempt,
                preflight=False,
                docker_image=chain.docker_image,
                intent_grace_s=chain.intent_grace_s,
                bundle=bundle,
            )
        except CapacityRefused as error:
            kind = error.accelerator or "session"
            return self._wait(chain, f"{kind} slots busy: Kaggle refused the push ({error})", None)
        except DockerImageRefused as error:
            return self._unpin_image(chain, error)
        except QuotaExhausted as error:
            until = self._quota_refresh()
            return self._wait(
                chain,
                f"GPU quota spent ({error}); waiting until {machine.iso(until)}",
                until,
                alert=True,
            )
        except Throttled as error:
            until = self.clock() + timedelta(seconds=error.retry_after or 60)
            return self._wait(
                chain, f"Kaggle is rate limiting; waiting until {machine.iso(until)}", until
            )
        except AuthenticationError:
            raise  # refused credentials: exit 2 with the fix, never "retry later" for ever
        except BadRequest as error:
            # A definite refusal: the attempt is spent (the next push gets a new slug) and
            # counts toward max_retries, so refusals every time end the chain, quoted.
            return self._alert(chain, f"Kaggle refused the push of {push.slug}: {error}")
        except (KaggleError, InfrastructureError) as error:
            # Refused before the push (launch's own capacity check), or unconfirmed: the
            # ledger holds the intent and the next step settles it with GetKernel.
            return self._unknown(chain, f"push of {push.slug} not done", error)
        if getattr(record, "adopted_at", None):
            # The listing showed the slug although the ledger had no push of it (a ledger
            # restored from before the push): that session is ours, nothing was pushed.
            message = (
                f"segment {push.segment} was already on Kaggle as {record.ref} (a push the ledger "
                "had lost): adopted it, pushed nothing"
            )
            self.ledger.note(chain.name, message, "warning")
            return StepResult(chain.name, StepOutcome.RUNNING, message, running=record.ref)
        resume = (
            f"resuming {push.start.ref} step {push.start.step} "
            f"(manifest {push.start.checkpoint.manifest_sha256[:12]})"
            if push.start
            else "from scratch"
        )
        message = f"pushed segment {push.segment} as {record.ref} ({push.segment_timesteps} steps, {resume})"
        chain = self.ledger.get_chain(chain.name)
        chain.wait_until = None
        chain.waiting_reason = None
        chain.note(message)
        if push.segment > len(chain.segments) and push.attempt == 0:
            chain.note(
                f"segment {push.segment} is beyond the plan of {len(chain.segments)}: segments end "
                "before their planned size (session limit?); plan shorter ones next time",
                "warning",
            )
        self.ledger.save_chain(chain)
        return StepResult(chain.name, StepOutcome.ADVANCED, message, running=record.ref)

    def _unpin_image(self, chain: ChainRecord, error: KaggleError) -> StepResult:
        """Kaggle refused the pinned image (retired?): retry once without the pin, with an
        ALERT; a second refusal counts as a failed attempt like any other refused push."""
        chain = self.ledger.get_chain(chain.name)
        if chain.image_unpinned:
            return self._alert(chain, f"Kaggle refused the push again: {error}")
        pinned = chain.docker_image or self.settings.kernel.docker_image
        chain.image_unpinned = True
        chain.docker_image = None
        self.ledger.save_chain(chain)
        return self._alert(
            chain,
            f"Kaggle refused the pinned image {pinned} ({error}); the next push goes without "
            "the pin, on Kaggle's current image: checkpoints pickled on the old one may not "
            "load or resume exactly",
        )

    def _gates(self, chain: ChainRecord, push: Push, run_config: RunConfig) -> StepResult | None:
        if not is_gpu_shape(self.settings.kernel.machine_shape):
            return None
        slots = gpu_slots(self.settings, self.ledger, self.client, chain=chain.name)
        wait = machine.capacity_gate(len(slots.busy), slots.cap)
        if wait is not None:
            return StepResult(chain.name, StepOutcome.WAITING, wait.reason)
        try:
            quota = self.client.quota()
        except AuthenticationError:
            raise
        except KaggleError as error:
            return self._unknown(chain, "GPU quota unreadable", error)
        need = segment_seconds(chain, push.segment, run_config)
        wait = machine.quota_gate(
            remaining_s=quota.remaining_s,
            refresh_time=quota.refresh_time,
            need_s=need,
            reserve_s=chain.quota_reserve_s,
            now=self.clock(),
        )
        if wait is not None:
            return self._wait(chain, wait.reason, wait.until, alert=True)
        return None

    def _settle_others(self) -> None:
        """Runs no active chain steps (plain launches, cancelled chains' segments) are settled
        against Kaggle on every step; a cancelled chain's ended segment is still pulled and
        kept, as the chain itself would have. Refused credentials raise; other failures
        leave the records for the next step."""
        from orchestrator.settle import settle_runs

        active = {c.name for c in self.ledger.chains() if not c.state.finished}
        settle_runs(self.ledger, self.client, select=lambda r: r.chain not in active)
        alerts = self._alerts  # another chain's alerts are its own (notes, stderr), not ours
        for chain in self.ledger.chains():
            if chain.state is ChainState.CANCELLED:
                self._keep_ended_segments(chain)
        self._alerts = alerts

    def _keep_ended_segments(self, chain: ChainRecord) -> None:
        from orchestrator.settle import GONE

        runs = self.ledger.runs(chain.name)
        for run in runs:
            if run.state != "terminal" or run.kernel_status == GONE:
                continue
            if run.pull_failures >= MAX_PULL_FAILURES:
                continue
            try:
                failed = self._pull(chain, run, runs) is not None
            except UserError:  # Kaggle denies it (deleted since it ended): counted, not fatal
                failed = True
            if failed:  # bounded: counted whether or not the pull itself counted it
                if self.ledger.get(run.slug).pull_failures == run.pull_failures:
                    self.ledger.update(run.slug, pull_failures=run.pull_failures + 1)
                continue
            kept = self.ledger.get(run.slug)
            message = (
                f"kept {run.ref}, which ended after the chain was cancelled: its outputs are "
                f"in {kept.pulled_dir} (checkpoint at step "
                f"{kept.checkpoint.step if kept.checkpoint else None})"
            )
            self.ledger.note(chain.name, message)
            self._say(f"chain {chain.name}: {message}")

    def _parent_gone(self, chain: ChainRecord, push: Push) -> StepResult | None:
        """A segment never starts without its parent's checkpoint: if the kernel holding it
        is gone from Kaggle, the chain stops and asks, never restarting from scratch."""
        from orchestrator.chain.parent import gone_message, is_gone

        if push.start is None:
            return None
        try:
            gone = is_gone(self.ledger, self.client, push.start)
        except AuthenticationError:
            raise
        except KaggleError as error:
            return self._unknown(
                chain, f"could not check that {push.start.ref} is on Kaggle", error
            )
        if not gone:
            return None
        return self._stop(chain, gone_message(self.ledger, chain.name, push.start))

    # -- bookkeeping ---------------------------------------------------------------------

    def _quota_refresh(self) -> datetime:
        try:
            refresh = self.client.quota().refresh_time
        except KaggleError:
            refresh = None
        return refresh if refresh and refresh > self.clock() else self.clock() + timedelta(hours=1)

    def _wait(
        self, chain: ChainRecord, reason: str, until: datetime | None, *, alert: bool = False
    ) -> StepResult:
        """Wait; with `alert` (the quota is spent until a date: a human may want to know),
        an ALERT the first time this reason is noted."""
        chain = self.ledger.get_chain(chain.name)
        if until is not None:
            chain.wait_until = machine.iso(until)
            chain.waiting_reason = reason
        new = not chain.notes or chain.notes[-1].message != reason
        if new:
            chain.note(reason, "alert" if alert else "warning")
        self.ledger.save_chain(chain)
        if alert and new:
            self._alerts.append(reason)
            self._say(f"ALERT chain {chain.name}: {reason}")
        else:
            self._say(f"chain {chain.name}: {reason}")
        return StepResult(chain.name, StepOutcome.WAITING, reason, until=until)

    def _known(self, chain: ChainRecord) -> None:
        current = self.ledger.get_chain(chain.name)
        if current.consecutive_unknowns:
            self.ledger.update_chain(chain.name, consecutive_unknowns=0)

    def _unknown(self, chain: ChainRecord, what: str, error: Exception) -> StepResult:
        """Unreadable is not failed: count it, and alert after a bounded run of them."""
        chain = self.ledger.get_chain(chain.name)
        chain.consecutive_unknowns += 1
        detail = (
            f"{what}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        )
        if chain.consecutive_unknowns % chain.max_unknowns == 0:
            alert = f"{chain.consecutive_unknowns} checks in a row could not read Kaggle; last: {detail}"
            chain.note(alert, "alert")
            self._say(f"ALERT chain {chain.name}: {alert}")
            self._alerts.append(alert)
        self.ledger.save_chain(chain)
        return StepResult(chain.name, StepOutcome.UNKNOWN, detail)

    def _stop(self, chain: ChainRecord, message: str) -> StepResult:
        """The chain cannot go on without the user: it stops (failed) with an ALERT."""
        chain = self.ledger.get_chain(chain.name)
        chain.state = ChainState.FAILED
        chain.wait_until = None
        chain.waiting_reason = None
        chain.note(message, "alert")
        self.ledger.save_chain(chain)
        self._alerts.append(message)
        self._say(f"ALERT chain {chain.name}: {message}")
        return StepResult(chain.name, StepOutcome.FAILED, message, alerts=[message])

    def _alert(self, chain: ChainRecord, message: str) -> StepResult:
        self._alerts.append(message)
        self.ledger.note(chain.name, message, "alert")
        self._say(f"ALERT chain {chain.name}: {message}")
        return StepResult(chain.name, StepOutcome.WAITING, message, alerts=[message])

    def _say(self, line: str) -> None:
        print(line, file=self.err, flush=True)


# -- helpers shared with status and report ---------------------------------------------------


def segment_run_config(
    chain: ChainRecord,
    segment: int,
    segment_timesteps: int,
    *,
    parent: StartPoint | None = None,
) -> RunConfig:
    """The chain's run config for one segment: same result fields, own size and index, and
    the parent checkpoint it must prove it continues (the kernel stops if it is missing).

    The ledger keeps the config as JSON in a file a person can edit, so this is its one
    validation on the way to a push (with the segment's own fields), and the stored hash
    is checked, not trusted."""
    data = {**chain.run_config, "segment_timesteps": segment_timesteps, "segment_index": segment}
    if parent is not None:
        data["parent"] = {
            "owner": parent.owner,
            "slug": parent.slug,
            "manifest_sha256": parent.checkpoint.manifest_sha256,
            "step": parent.step,
            "kind": parent.kind,
        }
    config = RunConfig.model_validate(data)
    if config.config_hash() != chain.config_hash:  # the stored config was edited by hand
        raise UserError(
            f"chain {chain.name}: the run config in the ledger no longer matches its hash; "
            "start a new chain instead of editing the ledger"
        )
    return config


def segment_seconds(chain: ChainRecord, segment: int, run_config: RunConfig) -> float:
    """Expected session length of a segment: the plan's figure, else the whole session limit."""
    planned = chain.segment_seconds or []
    if 0 < segment <= len(planned) and planned[segment - 1]:
        return float(planned[segment - 1])
    return float(run_config.session_limit_s)


def session_gpu_seconds(run: RunRecord, summary: layout.SessionSummary | None) -> float | None:
    """Billed seconds of a GPU session: its wall clock (from the summary, else push to end)."""
    if not is_gpu_shape(run.machine_shape):
        return 0.0
    if summary is not None and summary.wall.total:
        return float(summary.wall.total)
    start, end = machine.parse_time(run.pushed_at), machine.parse_time(run.terminal_at)
    if start and end:
        return max((end - start).total_seconds(), 0.0)
    return None
