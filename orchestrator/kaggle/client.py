"""KaggleClient: the calls kaggle-orchestrate makes, over httpx, with kagglesdk's wire types.

Every call is `POST {api}/{service}/{Method}` with a camelCase JSON body built by kagglesdk's
request classes and parsed by its response classes. The same client talks to Kaggle and to the
local emulator; only the API root differs.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterator
from datetime import timezone
from pathlib import Path

import httpx
from kagglesdk.kaggle_env import KaggleEnv, get_endpoint, get_env
from kagglesdk.kernels.types.kernels_api_service import (
    ApiDeleteKernelRequest,
    ApiDeleteKernelResponse,
    ApiGetAcceleratorQuotaStatisticsRequest,
    ApiGetAcceleratorQuotaStatisticsResponse,
    ApiGetKernelRequest,
    ApiGetKernelResponse,
    ApiGetKernelSessionStatusRequest,
    ApiGetKernelSessionStatusResponse,
    ApiKernelMetadata,
    ApiListKernelSessionOutputRequest,
    ApiListKernelSessionOutputResponse,
    ApiListKernelsRequest,
    ApiListKernelsResponse,
    ApiSaveKernelResponse,
)
from kagglesdk.kernels.types.kernels_enums import KernelsListSortType, KernelsListViewType
from kagglesdk.security.types.oauth_service import IntrospectTokenRequest, IntrospectTokenResponse

from .credentials import Credentials, discover_credentials
from .download import ProgressCallback, download_file
from .errors import (
    AmbiguousPush,
    AuthenticationError,
    BadRequest,
    CapacityRefused,
    CredentialsNotFound,
    DockerImageRefused,
    KaggleError,
    NotFoundError,
    QuotaExhausted,
)
from .logstream import parse_log_blob, read_log_so_far, stream_log
from .models import (
    AcceleratorQuota,
    DownloadResult,
    KernelInfo,
    KernelStatus,
    LogEntry,
    OutputFile,
    OutputListing,
    PushResult,
)
from .push_spec import PushSpec
from .retry import RetryPolicy
from .rpc import RpcChannel, Transient, final_error

logger = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.kaggle.com/v1"
API_URL_ENV = "ORCHESTRATE_KAGGLE_API"
KERNELS = "kernels.KernelsApiService"
OAUTH = "security.OAuthService"
USER_AGENT = "kaggle-orchestrate/0.1"
OUTPUT_PAGE_SIZE = 100
LIST_PAGE_SIZE = 100
# Listing one's own kernels newest first: a slug we look for was pushed recently, so it is
# on the first pages; past this many the account has more kernels than we look through.
LIST_MAX_PAGES = 20

# `Maximum batch GPU session count of 2 reached.`, `Maximum interactive CPU session count of
# 5 reached.`, TPU alike: every one means "wait for a session to end".
_CAPACITY = re.compile(
    r"maximum (?:batch |interactive )?(gpu|cpu|tpu) session count of (\d+)", re.IGNORECASE
)
_QUOTA = re.compile(r"\bquota\b", re.IGNORECASE)
_IMAGE = re.compile(r"docker[ _-]?image", re.IGNORECASE)


def resolve_api_url(api_url: str | None = None) -> str:
    """The API root: argument, else ORCHESTRATE_KAGGLE_API, else KAGGLE_API_ENVIRONMENT, else production."""
    if api_url:
        return api_url.rstrip("/")
    if os.environ.get(API_URL_ENV):
        return os.environ[API_URL_ENV].rstrip("/")
    if os.environ.get("KAGGLE_API_ENVIRONMENT"):
        env = get_env()
        # As kagglesdk: production serves {endpoint}/v1, every other environment {endpoint}/api/v1.
        return f"{get_endpoint(env)}/v1" if env == KaggleEnv.PROD else f"{get_endpoint(env)}/api/v1"
    return DEFAULT_API_URL


def version_label(version: int | str | None) -> str | None:
    """`v<N>` as the API wants it (a bare number gets a 404)."""
    if version is None:
        return None
    text = str(version)
    return f"v{text}" if text.isdigit() else text


def kernel_ref(ref: str | None) -> str:
    """`owner/slug`, from SaveKernel's `/code/owner/slug` form or a plain ref."""
    ref = (ref or "").strip("/")
    return ref.removeprefix("code/")


def push_refusal(error: str) -> KaggleError:
    """The typed error for a SaveKernel `error` string returned with HTTP 200."""
    capacity = _CAPACITY.search(error)
    if capacity:
        return CapacityRefused(
            error, limit=int(capacity.group(2)), accelerator=capacity.group(1).upper()
        )
    if _QUOTA.search(error):
        return QuotaExhausted(error)
    if _IMAGE.search(error):
        return DockerImageRefused(f"Kaggle refused the push's pinned image: {error}")
    return BadRequest(f"Kaggle refused the push: {error}")


def _kernel_info(meta: ApiKernelMetadata, owner: str, slug: str, source: str | None) -> KernelInfo:
    last_run = meta.last_run_time
    if last_run is not None and last_run.tzinfo is None:
        last_run = last_run.replace(tzinfo=timezone.utc)
    return KernelInfo(
        ref=kernel_ref(meta.ref) or f"{owner}/{slug}",
        slug=meta.slug or slug,
        author=meta.author or owner,
        title=meta.title,
        # kagglesdk reads an absent optional int as 0: ask whether it was sent.
        current_version_number=(
            meta.current_version_number if "current_version_number" in meta else None
        ),
        last_run_time=last_run,
        language=meta.language,
        kernel_type=meta.kernel_type,
        is_private=meta.is_private,
        enable_gpu=meta.enable_gpu,
        enable_internet=meta.enable_internet,
        machine_shape=meta.machine_shape,
        kernel_sources=list(meta.kernel_data_sources or []),
        dataset_sources=list(meta.dataset_data_sources or []),
        source=source,
    )


def _redacting(method):
    """Scrub this client's key and token out of any error a call raises (a server may echo them)."""

    @functools.wraps(method)
    def guarded(self: KaggleClient, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except KaggleError as exc:
            exc.args = tuple(
                self.credentials.redact(a) if isinstance(a, str) else a for a in exc.args
            )
            raise

    return guarded


class KaggleClient:
    """The Kaggle API calls kaggle-orchestrate needs (see docs/internals.md, "Client")."""

    def __init__(
        self,
        api_url: str | None = None,
        credentials: Credentials | None = None,
        *,
        timeout: float = 30,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api_url = resolve_api_url(api_url)
        # Discovered credentials holding a token get their username confirmed by IntrospectToken
        # on first use, as the official CLI does; explicit ones are trusted as given.
        self._confirm_token = credentials is None
        self.credentials = credentials or discover_credentials()
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        headers = {"User-Agent": USER_AGENT}
        self._http = httpx.Client(
            auth=self.credentials.auth(), timeout=timeout, transport=transport, headers=headers
        )
        # Signed output URLs may be on another host: never send them our credentials.
        self._anonymous_http = httpx.Client(
            timeout=timeout, transport=transport, headers=headers, follow_redirects=True
        )
        self._rpc = RpcChannel(self._http, self.api_url, self.retry)
        self._username: str | None = (
            None if self._needs_introspection() else self.credentials.username
        )

    @classmethod
    def from_env(
        cls,
        *,
        timeout: float = 30,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> KaggleClient:
        """Credentials found as the official CLI finds them; API root from ORCHESTRATE_KAGGLE_API."""
        return cls(None, None, timeout=timeout, retry=retry, transport=transport)

    def __enter__(self) -> KaggleClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._anonymous_http.close()

    def __repr__(self) -> str:
        return f"KaggleClient(api_url={self.api_url!r}, credentials={self.credentials!r})"

    # -- identity ---------------------------------------------------------------------------

    def _needs_introspection(self) -> bool:
        return self.credentials.kind == "bearer" and (
            self._confirm_token or not self.credentials.username
        )

    @property
    @_redacting
    def username(self) -> str:
        """The account the credentials belong to."""
        if self._username is None:
            self._authenticate()
        assert self._username is not None
        return self._username

    def _authenticate(self) -> None:
        """Confirm an access token with IntrospectToken; a rejected token falls back to kaggle.json."""
        request = IntrospectTokenRequest()
        request.token = self.credentials.token or ""
        try:
            response = self._rpc.call(OAUTH, "IntrospectToken", request, IntrospectTokenResponse)
            rejected = not response.active or not response.username
        except (AuthenticationError, NotFoundError, BadRequest):
            rejected = True
        if not rejected:
            self._username = response.username
            return
        if not self._confirm_token:
            raise AuthenticationError(
                "Kaggle rejected the access token (IntrospectToken: inactive)"
            )
        logger.info("Ignoring invalid or expired access token from %s", self.credentials.source)
        try:
            fallback = discover_credentials(include_token=False)
        except CredentialsNotFound as exc:
            raise AuthenticationError(
                f"Kaggle rejected the access token from {self.credentials.source} and no API key is set up "
                "either; fix: create a new token at https://www.kaggle.com/settings"
            ) from exc
        self._use_credentials(fallback)

    def _use_credentials(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._http.auth = credentials.auth()
        self._username = credentials.username

    def _ready(self) -> None:
        if self._username is None and self._needs_introspection():
            self._authenticate()

    def _call(self, method: str, request, response_type):
        self._ready()
        return self._rpc.call(KERNELS, method, request, response_type)

    # -- kernels ----------------------------------------------------------------------------

    def web_url(self, owner: str, slug: str) -> str:
        if self.api_url == DEFAULT_API_URL:
            return f"https://www.kaggle.com/code/{owner}/{slug}"
        origin = httpx.URL(self.api_url).copy_with(path="/", query=None)
        return f"{str(origin).rstrip('/')}/code/{owner}/{slug}"

    @_redacting
    def get_kernel(
        self, owner: str, slug: str, *, version: int | str | None = None
    ) -> KernelInfo | None:
        """The kernel's metadata (and code); None when Kaggle answers 404.

        kaggle.com answers 403 (`KernelNotVisible`) for a kernel that does not exist or was
        pushed seconds ago: that is raised, never read as "absent". To learn whether a slug
        exists, use `find_own_kernel`.
        """
        request = ApiGetKernelRequest()
        request.user_name = owner
        request.kernel_slug = slug
        request.version_label = version_label(version)
        try:
            response = self._call("GetKernel", request, ApiGetKernelResponse)
        except NotFoundError:
            return None
        meta = response.metadata
        if meta is None:
            return None
        blob = response.blob
        return _kernel_info(meta, owner, slug, blob.source if blob is not None else None)

    def list_own_kernels(self, *, max_pages: int = LIST_MAX_PAGES) -> Iterator[KernelInfo]:
        """This account's kernels, newest first (ListKernels, page by page).

        A call that cannot be confused: 401/403 here is a credentials problem.
        """
        owner = self.username
        for page in range(1, max_pages + 1):
            request = ApiListKernelsRequest()
            request.user = owner
            request.group = KernelsListViewType.PROFILE
            request.sort_by = KernelsListSortType.DATE_CREATED
            request.page = page
            request.page_size = LIST_PAGE_SIZE
            response = self._call("ListKernels", request, ApiListKernelsResponse)
            kernels = list(response.kernels or [])
            for meta in kernels:
                yield _kernel_info(meta, owner, meta.slug or "", None)
            if len(kernels) < LIST_PAGE_SIZE:
                return

    @_redacting
    def find_own_kernel(self, owner: str, slug: str) -> KernelInfo | None:
        """The account's kernel `slug` as its own listing shows it, or None when not listed.

        This is how a slug's existence is learned, never from GetKernel's 403. A kernel pushed
        moments ago may not be listed yet either: callers allow a grace period (`intent_grace_s`)
        before they conclude a push never happened.
        """
        if owner != self.username:
            raise BadRequest(
                f"can only look up this account's own kernels ({self.username}), not {owner}/{slug}"
            )
        return next((k for k in self.list_own_kernels() if k.slug == slug), None)

    @_redacting
    def verify_credentials(self) -> str:
        """Prove the credentials with a call that cannot be confused (quota statistics);
        raises AuthenticationError when Kaggle refuses them. Returns the username."""
        self.quota()
        return self.username

    @_redacting
    def delete_kernel(self, owner: str, slug: str) -> None:
        request = ApiDeleteKernelRequest()
        request.user_name = owner
        request.kernel_slug = slug
        response = self._call("DeleteKernel", request, ApiDeleteKernelResponse)
        if response.error_message:
            raise BadRequest(f"Kaggle refused to delete {owner}/{slug}: {response.error_message}")

    @_redacting
    def status(self, owner: str, slug: str, *, version: int | str | None = None) -> KernelStatus:
        """Status of the slug's latest session (or of one version)."""
        request = ApiGetKernelSessionStatusRequest()
        request.user_name = owner
        request.kernel_slug = slug
        request.version_label = version_label(version)
        response = self._call("GetKernelSessionStatus", request, ApiGetKernelSessionStatusResponse)
        return KernelStatus(
            status=response.status.name, failure_message=response.failure_message or None
        )

    @_redacting
    def list_output(
        self, owner: str, slug: str, *, version: int | str | None = None
    ) -> OutputListing:
        """Every output file (all pages) and the stored log of the slug's latest session."""
        files: list[OutputFile] = []
        log: list[LogEntry] = []
        token = ""
        seen_tokens: set[str] = set()
        while True:
            request = ApiListKernelSessionOutputRequest()
            request.user_name = owner
            request.kernel_slug = slug
            request.version_label = version_label(version)
            request.page_size = OUTPUT_PAGE_SIZE
            request.page_token = token
            response = self._call(
                "ListKernelSessionOutput", request, ApiListKernelSessionOutputResponse
            )
            for item in response.files or []:
                if item.url and item.file_name:
                    files.append(OutputFile(name=item.file_name, url=self._absolute(item.url)))
            if not log and response.log:
                log = parse_log_blob(response.log)
            token = response.next_page_token or ""
            if not token:
                return OutputListing(files=files, log=log)
            if token in seen_tokens:
                raise KaggleError(
                    f"ListKernelSessionOutput for {owner}/{slug} repeated page token {token!r}"
                )
            seen_tokens.add(token)

    def _absolute(self, url: str) -> str:
        return str(httpx.URL(self.api_url + "/").join(url))

    def stream_log(
        self, owner: str, slug: str, *, version: int | str | None = None
    ) -> Iterator[LogEntry]:
        """Live log entries, each once, until the session's log ends (see logstream)."""
        self._ready()
        url = f"{self.api_url}/kernels/logs/stream/{owner}/{slug}"
        entries = stream_log(self._http, url, self.retry, version_label=version_label(version))
        try:
            yield from entries
        except KaggleError as exc:
            exc.args = tuple(
                self.credentials.redact(a) if isinstance(a, str) else a for a in exc.args
            )
            raise

    @_redacting
    def log_so_far(self, owner: str, slug: str) -> list[LogEntry]:
        """The log the slug's latest session has written so far (one read, no waiting for
        the end): what a chain's progress check reads."""
        self._ready()
        return read_log_so_far(self._http, f"{self.api_url}/kernels/logs/stream/{owner}/{slug}")

    @_redacting
    def download(
        self,
        url: str,
        dest: Path,
        *,
        expected_size: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> DownloadResult:
        """Stream one output file to `dest` (via `dest.part`, resumable) with its sha256."""
        return download_file(
            self._anonymous_http,
            self._absolute(url),
            Path(dest),
            retry=self.retry,
            expected_size=expected_size,
            progress=progress,
        )

    @_redacting
    def quota(self) -> AcceleratorQuota:
        """This account's weekly GPU quota."""
        return self.accelerator_quotas()["gpu"] or AcceleratorQuota(0.0, 0.0, None)

    @_redacting
    def accelerator_quotas(self) -> dict[str, AcceleratorQuota | None]:
        """This account's weekly quotas: {"gpu": ..., "tpu": ...}, None where Kaggle sent none."""
        response = self._call(
            "GetAcceleratorQuotaStatistics",
            ApiGetAcceleratorQuotaStatisticsRequest(),
            ApiGetAcceleratorQuotaStatisticsResponse,
        )
        refresh = response.quota_refresh_time
        if refresh is not None and refresh.tzinfo is None:
            refresh = refresh.replace(tzinfo=timezone.utc)

        def parse(quota) -> AcceleratorQuota | None:
            if quota is None:
                return None
            used = quota.time_used.total_seconds() if quota.time_used is not None else 0.0
            total = quota.total_time_allowed.total_seconds() if quota.total_time_allowed else 0.0
            return AcceleratorQuota(time_used_s=used, total_allowed_s=total, refresh_time=refresh)

        return {"gpu": parse(response.gpu_quota), "tpu": parse(response.tpu_quota)}

    # -- datasets ---------------------------------------------------------------------------

    @_redacting
    def create_dataset(
        self, owner: str, slug: str, title: str, files: list[Path], *, private: bool = True
    ):
        """A new (private) dataset from local files; see `orchestrator.kaggle.datasets`."""
        from .datasets import create_dataset

        return create_dataset(self, owner, slug, title, files, private=private)

    @_redacting
    def dataset_status(self, owner: str, slug: str) -> str:
        """READY, a processing status, or NOT_VISIBLE (denied: unknown or just created)."""
        from .datasets import dataset_status

        return dataset_status(self, owner, slug)

    # -- push -------------------------------------------------------------------------------

    @_redacting
    def push(self, spec: PushSpec) -> PushResult:
        """Save and run a kernel version. Never repeats a push that Kaggle may have accepted.

        After an ambiguous failure (timeout, reset, 5xx, garbage reply) GetKernel decides: a new
        version means the push went through; an unchanged kernel means it can be sent again;
        anything else raises AmbiguousPush.
        """
        self._ready()
        request = spec.to_request()
        known_before = self._version_before_push(spec)
        failure: Transient | None = None
        for attempt in range(1, self.retry.max_attempts + 1):
            if attempt > 1:
                self.retry.sleep(
                    self.retry.reconnect_wait(attempt - 1, failure.retry_after if failure else None)
                )
            try:
                response = self._rpc.call_once(
                    KERNELS, "SaveKernel", request, ApiSaveKernelResponse
                )
            except Transient as exc:
                failure = exc
                if exc.status_code == 429 or not exc.may_have_reached_server:
                    continue  # refused before any work: safe to send again
                confirmed = self._check_ambiguous_push(spec, known_before, exc)
                if confirmed is not None:
                    return confirmed
                logger.info("Push of %s was not accepted (%s); sending it again", spec.id, exc)
                continue
            return self._push_result(spec, response)
        assert failure is not None
        raise final_error(failure, f"push of {spec.id or spec.id_no}")

    def _push_result(self, spec: PushSpec, response: ApiSaveKernelResponse) -> PushResult:
        if response.error:
            raise push_refusal(response.error)
        invalid = {
            kind: list(values)
            for kind, values in (
                ("kernel", response.invalid_kernel_sources),
                ("dataset", response.invalid_dataset_sources),
                ("competition", response.invalid_competition_sources),
                ("model", response.invalid_model_sources),
                ("tag", response.invalid_tags),
            )
            if values
        }
        for kind, values in invalid.items():
            logger.warning(
                "Kaggle could not attach these %s sources to %s: %s",
                kind,
                spec.id,
                ", ".join(values),
            )
        ref = kernel_ref(response.ref) or (spec.id or "")
        url = response.url or (self.web_url(spec.owner, spec.slug) if spec.id else "")
        return PushResult(
            ref=ref,
            url=url,
            version_number=response.version_number if "version_number" in response else None,
            invalid_sources=invalid,
        )

    def _version_before_push(self, spec: PushSpec) -> tuple[bool, int | None] | None:
        """(kernel exists, its version) before the push, from the account's own listing
        (GetKernel's 403 cannot tell absent from just pushed); None without an owner/slug."""
        if not spec.id or spec.owner != self.username:
            return None
        info = self.find_own_kernel(spec.owner, spec.slug)
        return (info is not None, info.current_version_number if info else None)

    def _find_after_ambiguous_push(self, spec: PushSpec, existed: bool) -> KernelInfo | None:
        """The kernel in the account's listing; a new one is looked for during
        `retry.listing_check_s`, since Kaggle lists it only a while after its push."""
        waited = 0.0
        while True:
            info = self.find_own_kernel(spec.owner, spec.slug)
            if info is not None or existed or waited >= self.retry.listing_check_s:
                return info
            self.retry.sleep(self.retry.listing_poll_s)
            waited += self.retry.listing_poll_s

    def _check_ambiguous_push(
        self, spec: PushSpec, known_before: tuple[bool, int | None] | None, failure: Transient
    ) -> PushResult | None:
        """PushResult if the failed-looking push went through, None if it surely did not."""
        if known_before is None:
            raise AmbiguousPush(
                f"push of kernel #{spec.id_no} failed ambiguously ({failure}); check it on Kaggle"
            )
        try:
            info = self._find_after_ambiguous_push(spec, known_before[0])
        except KaggleError as exc:
            raise AmbiguousPush(
                f"push of {spec.id} failed ambiguously ({failure}) and the check failed too ({exc}); "
                "do not push again before Kaggle's listing answers",
                ref=spec.id,
            ) from None
        existed, version = known_before
        if info is None and not existed:
            # A new kernel can stay unlisted for minutes after its push: absence proves
            # nothing. The caller decides, after a grace period, whether to push again.
            raise AmbiguousPush(
                f"push of {spec.id} failed ambiguously ({failure}) and the new kernel is not "
                "listed yet; do not push again before the grace period has passed",
                ref=spec.id,
            )
        if info is None:
            return None
        if existed and (version is None or info.current_version_number is None):
            raise AmbiguousPush(
                f"push of {spec.id} failed ambiguously ({failure}) and Kaggle reports no version numbers "
                "to tell whether it was accepted",
                ref=spec.id,
            )
        if existed and info.current_version_number <= version:
            return None
        logger.info(
            "Push of %s failed ambiguously but Kaggle accepted it (version %s)",
            spec.id,
            info.current_version_number,
        )
        return PushResult(
            ref=info.ref,
            url=self.web_url(spec.owner, spec.slug),
            version_number=info.current_version_number,
            confirmed_by_check=True,
        )
