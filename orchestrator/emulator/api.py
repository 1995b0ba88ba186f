"""The `kernels.KernelsApiService` methods: requests and responses are kagglesdk's own classes."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from kagglesdk.kernels.types.kernels_api_service import (
    ApiAcceleratorQuota,
    ApiDeleteKernelRequest,
    ApiDeleteKernelResponse,
    ApiGetAcceleratorQuotaStatisticsResponse,
    ApiGetKernelRequest,
    ApiGetKernelResponse,
    ApiGetKernelSessionStatusRequest,
    ApiGetKernelSessionStatusResponse,
    ApiKernelBlob,
    ApiKernelMetadata,
    ApiKernelSessionOutputFile,
    ApiListKernelSessionOutputRequest,
    ApiListKernelSessionOutputResponse,
    ApiListKernelsRequest,
    ApiListKernelsResponse,
    ApiSaveKernelRequest,
    ApiSaveKernelResponse,
)
from kagglesdk.kernels.types.kernels_enums import (
    KernelExecutionType,
    KernelsListViewType,
    KernelWorkerStatus,
)
from slugify import slugify
from starlette.requests import Request
from starlette.responses import JSONResponse

from orchestrator.capacity import SESSION_LIMIT_S, TPU_SESSION_LIMIT_S
from orchestrator.emulator.executor import Executor, read_log
from orchestrator.emulator.faults import FaultBook
from orchestrator.emulator.state import ACTIVE_STATUSES, Kernel, Store, Version
from orchestrator.emulator.wire import ApiError, ok, utc_naive

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,98}[a-z0-9]$")
DOCKER_IMAGE_REPO = "gcr.io/kaggle-images/python"
GPU_DOCKER_IMAGE_REPO = "gcr.io/kaggle-gpu-images/python"
GET_DENIED = "Permission 'kernels.get' was denied"
DELETE_DENIED = "Permission 'kernels.delete' was denied"
DEFAULT_PAGE_SIZE = 20


@dataclass
class Limits:
    max_session_s: float = SESSION_LIMIT_S
    gpu_slots: int = 2
    cpu_slots: int = 5
    tpu_slots: int = 1
    weekly_gpu_quota_s: float = 30 * 3600
    weekly_tpu_quota_s: float = 20 * 3600
    # Read-after-write lag of a new kernel, drawn uniformly in [min, max] seconds.
    read_lag_s: tuple[float, float] = (2.0, 8.0)
    seed: int | None = None
    known_images: tuple[str, ...] = ()
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self):
        self.rng = random.Random(self.seed)


def default_docker_image(gpu: bool = False) -> str:
    """The emulator's "latest" image: shaped like Kaggle's, stable for one Python version."""
    digest = hashlib.sha256(f"python-{platform.python_version()}".encode()).hexdigest()
    if gpu:
        digest = hashlib.sha256(f"gpu-python-{platform.python_version()}".encode()).hexdigest()
        return f"{GPU_DOCKER_IMAGE_REPO}@sha256:{digest}"
    return f"{DOCKER_IMAGE_REPO}@sha256:{digest}"


def parse_read_lag(text: str) -> tuple[float, float]:
    """`MIN:MAX` (or one number) seconds -> (min, max)."""
    low, sep, high = text.partition(":")
    try:
        lag = (float(low), float(high if sep else low))
    except ValueError:
        raise ValueError(f"bad read lag {text!r}: write MIN:MAX seconds, e.g. 2:8") from None
    if lag[0] < 0 or lag[1] < lag[0]:
        raise ValueError(f"bad read lag {text!r}: need 0 <= MIN <= MAX")
    return lag


def is_gpu_shape(enable_gpu: bool | None, machine_shape: str | None) -> bool:
    shape = (machine_shape or "").lower()
    if shape:
        return shape not in ("none", "cpu") and "tpu" not in shape
    return bool(enable_gpu)


class KernelsService:
    def __init__(self, store: Store, executor: Executor, limits: Limits, faults: FaultBook):
        self.store = store
        self.executor = executor
        self.limits = limits
        self.faults = faults
        # Set through the test API: every later push runs on this image whatever it asked
        # for, as when Kaggle retires a pinned image or updates "latest".
        self.forced_docker_image: str | None = None
        self._rng_lock = threading.Lock()

    # -- helpers -----------------------------------------------------------------------
    def _visible(self, user: str, owner: str, slug: str, denied: str = GET_DENIED) -> Kernel:
        """The kernel, if this user may read it now. Kaggle never confirms existence: a
        missing kernel, someone else's private one and one still in its read-after-write
        lag are all the same 403."""
        kernel = self.store.get(owner, slug)
        if kernel is None or (kernel.is_private and kernel.owner != user) or not kernel.visible():
            raise ApiError(403, denied)
        return kernel

    def _draw_lag(self) -> float:
        low, high = self.limits.read_lag_s
        with self._rng_lock:
            return self.limits.rng.uniform(low, high) if high > 0 else 0.0

    def known_images(self) -> set[str]:
        return (
            {default_docker_image(False), default_docker_image(True)}
            | set(self.limits.known_images)
            | self.store.images_ever_run()
        )

    @staticmethod
    def _version(kernel: Kernel, label: str | None) -> Version:
        if label:
            match = re.fullmatch(r"v(\d+)", label)
            version = kernel.version(int(match.group(1))) if match else None
            if version is None:
                raise ApiError(404, f"Version {label} of {kernel.ref} not found")
            return version
        if kernel.latest is None:
            raise ApiError(404, f"Kernel {kernel.ref} has no versions")
        return kernel.latest

    def gpu_seconds_used(self, user: str) -> float:
        return self.store.gpu_seconds_banked(user) + self.executor.running_gpu_seconds(user)

    def _image_for(self, req: ApiSaveKernelRequest, existing: Kernel | None, gpu: bool) -> str:
        """The image a new version runs on: the one asked for, else (pinning "original") the
        slug's previous image, else the current default (GPU or CPU)."""
        if self.forced_docker_image:
            return self.forced_docker_image
        if req.docker_image:
            return req.docker_image
        if req.docker_image_pinning_type == "original" and existing and existing.docker_image:
            return existing.docker_image
        return default_docker_image(gpu)

    def _metadata(self, kernel: Kernel, version: Version | None = None) -> ApiKernelMetadata:
        meta = ApiKernelMetadata()
        meta.id = kernel.id
        meta.ref = kernel.ref
        meta.title = kernel.title
        meta.author = kernel.owner
        meta.slug = kernel.slug
        latest = kernel.latest
        if latest is not None:
            meta.last_run_time = utc_naive(latest.started_at or latest.created_at)
            meta.current_version_number = latest.number
        meta.language = kernel.language
        meta.kernel_type = kernel.kernel_type
        meta.is_private = kernel.is_private
        meta.enable_gpu = kernel.enable_gpu
        meta.enable_tpu = kernel.enable_tpu
        meta.enable_internet = kernel.enable_internet
        meta.category_ids = kernel.category_ids
        meta.dataset_data_sources = kernel.dataset_sources
        meta.kernel_data_sources = kernel.kernel_sources
        meta.competition_data_sources = kernel.competition_sources
        meta.model_data_sources = kernel.model_sources
        meta.machine_shape = kernel.machine_shape
        meta.docker_image = version.docker_image if version else kernel.docker_image
        return meta

    # -- methods -----------------------------------------------------------------------
    def SaveKernel(self, user: str, body: dict, request: Request) -> JSONResponse:
        req = ApiSaveKernelRequest.from_dict(body)
        owner, slug = self._target_of_push(user, req)
        if owner != user:
            raise ApiError(403, f"Permission 'kernels.update' was denied for {owner}/{slug}")
        if not SLUG_RE.match(slug):
            raise ApiError(
                400, f"Invalid kernel slug {slug!r}: use 3-100 lowercase letters, digits and dashes"
            )
        existing = self.store.get(owner, slug)
        has_text = "text" in req  # an absent text reads as "" through kagglesdk's getter
        if not has_text and existing is None:
            raise ApiError(400, "A new kernel needs its source text")
        language = req.language or (existing.language if existing else "python")
        kernel_type = req.kernel_type or (existing.kernel_type if existing else "script")
        if language != "python":
            raise ApiError(400, f"The emulator runs only python kernels, not {language!r}")

        response = ApiSaveKernelResponse()
        run = req.kernel_execution_type != KernelExecutionType.QUICK_SAVE
        gpu = is_gpu_shape(req.enable_gpu, req.machine_shape)
        tpu = bool(req.enable_tpu) or "tpu" in (req.machine_shape or "").lower()
        visible_sources, invalid_sources = [], []
        for ref in req.kernel_data_sources:
            src_owner, _, src_slug = ref.partition("/")
            try:
                self._visible(user, src_owner, src_slug)
                visible_sources.append(ref)
            except ApiError:
                invalid_sources.append(ref)

        if (
            req.docker_image
            and not self.forced_docker_image
            and req.docker_image not in self.known_images()
        ):
            response.error = f"The requested docker image is not available: {req.docker_image}"
            return ok(response)

        with self.store.lock:  # the capacity check and the new version are one step
            if run:
                refusal = self._gpu_refusal(user) if gpu else self._slot_refusal(user, tpu)
                if refusal:
                    response.error = refusal
                    return ok(response)
            existing = self.store.get(owner, slug)
            kernel = existing or Kernel(
                id=self.store.next_id(),
                owner=owner,
                slug=slug,
                title=req.new_title or slug,
                visible_at=time.time() + self._draw_lag(),  # read-after-write lag
            )
            if req.new_title:
                kernel.title = req.new_title
            kernel.language, kernel.kernel_type = language, kernel_type
            if "is_private" in req:  # kagglesdk getters answer False for an absent bool
                kernel.is_private = req.is_private
            kernel.enable_gpu, kernel.enable_tpu = gpu, tpu
            if "enable_internet" in req:
                kernel.enable_internet = req.enable_internet
            kernel.machine_shape = req.machine_shape or None
            image = self._image_for(req, existing, gpu)
            kernel.docker_image = image
            kernel.dataset_sources = list(req.dataset_data_sources)
            kernel.kernel_sources = visible_sources
            kernel.competition_sources = list(req.competition_data_sources)
            kernel.model_sources = list(req.model_data_sources)
            kernel.category_ids = list(req.category_ids)
            limit = min(self.limits.max_session_s, TPU_SESSION_LIMIT_S if tpu else float("inf"))
            if req.session_timeout_seconds:
                limit = min(limit, float(req.session_timeout_seconds))
            number = (kernel.latest.number + 1) if kernel.latest else 1
            version = Version(
                number=number,
                gpu=gpu,
                tpu=tpu and not gpu,
                internet=kernel.enable_internet,
                machine_shape=req.machine_shape or None,
                session_limit_s=limit,
                run=run,
                kernel_sources=visible_sources,
                dataset_sources=list(req.dataset_data_sources),
                status="NEW_SCRIPT" if run else "COMPLETE",
                pushed_docker_image=req.docker_image or None,
                docker_image=image,
            )
            kernel.versions.append(version)
            source_path = self.store.version_dir(owner, slug, number) / "source.txt"
            source_path.parent.mkdir(parents=True, exist_ok=True)
            text = req.text if has_text else self._source_of(existing)
            source_path.write_text(text, encoding="utf-8")
            self.store.save(kernel)
            if run:
                self.store.remember_image(image)
        self.faults.count("SaveKernel.accepted")
        if run:
            self.executor.start(kernel, version, text)

        response.ref = f"/code/{owner}/{slug}"
        response.url = f"{str(request.base_url).rstrip('/')}/code/{owner}/{slug}"
        response.version_number = number
        response.kernel_id = kernel.id
        response.invalid_kernel_sources = invalid_sources
        return ok(response)

    def _target_of_push(self, user: str, req: ApiSaveKernelRequest) -> tuple[str, str]:
        if req.slug:
            owner, sep, slug = req.slug.partition("/")
            return (owner, slug) if sep else (user, owner)
        if req.id:
            kernel = self.store.by_id(req.id)
            if kernel is None or (kernel.is_private and kernel.owner != user):
                raise ApiError(403, GET_DENIED)
            return kernel.owner, kernel.slug
        if req.new_title:
            return user, slugify(req.new_title)
        raise ApiError(400, "SaveKernel needs a slug, an id or a new title")

    def _source_of(self, kernel: Kernel | None) -> str:
        if kernel is None or kernel.latest is None:
            return ""
        path = (
            self.store.version_dir(kernel.owner, kernel.slug, kernel.latest.number) / "source.txt"
        )
        return path.read_text(encoding="utf-8") if path.exists() else ""

    def _slot_refusal(self, user: str, tpu: bool) -> str | None:
        kind, slots = ("TPU", self.limits.tpu_slots) if tpu else ("CPU", self.limits.cpu_slots)
        if self.executor.active_sessions(user, kind.lower()) >= slots:
            return f"Maximum batch {kind} session count of {slots} reached."
        return None

    def _gpu_refusal(self, user: str) -> str | None:
        slots = self.limits.gpu_slots
        if self.executor.active_gpu_sessions(user) >= slots:
            return f"Maximum batch GPU session count of {slots} reached."
        allowed = self.limits.weekly_gpu_quota_s
        if self.gpu_seconds_used(user) >= allowed:
            refresh = self.store.quota_refresh_time()
            return (
                f"You have used your weekly GPU quota of {allowed / 3600:g} hours. "
                f"Your quota refreshes at {refresh.isoformat(timespec='seconds')}Z."
            )
        return None

    def GetKernelSessionStatus(self, user: str, body: dict, request: Request) -> JSONResponse:
        req = ApiGetKernelSessionStatusRequest.from_dict(body)
        version = self._version(
            self._visible(user, req.user_name, req.kernel_slug), req.version_label
        )
        response = ApiGetKernelSessionStatusResponse()
        response.status = KernelWorkerStatus[version.status]
        response.failure_message = version.failure_message
        return ok(response, always=("status",))

    def ListKernelSessionOutput(self, user: str, body: dict, request: Request) -> JSONResponse:
        req = ApiListKernelSessionOutputRequest.from_dict(body)
        kernel = self._visible(user, req.user_name, req.kernel_slug)
        version = self._version(kernel, req.version_label)
        files = []
        if version.status not in ACTIVE_STATUSES:  # outputs are saved when the session ends
            working = self.store.working_dir(kernel.owner, kernel.slug, version.number)
            files = sorted(
                os.path.relpath(os.path.join(dirpath, name), working).replace(os.sep, "/")
                for dirpath, _, names in os.walk(working)
                for name in names
            )
        page_size = req.page_size or DEFAULT_PAGE_SIZE
        try:
            start = int(req.page_token or 0)
        except ValueError as exc:
            raise ApiError(400, f"Invalid page token {req.page_token!r}") from exc
        base = str(request.base_url).rstrip("/")
        response = ApiListKernelSessionOutputResponse()
        for name in files[start : start + page_size]:
            item = ApiKernelSessionOutputFile()
            item.file_name = name
            item.url = f"{base}/_out/{version.output_token}/{name}"
            response.files.append(item)
        if start + page_size < len(files):
            response.next_page_token = str(start + page_size)
        entries, _ = read_log(self.store.log_path(kernel.owner, kernel.slug, version.number))
        response.log = json.dumps(entries)
        return ok(response)

    def GetKernel(self, user: str, body: dict, request: Request) -> JSONResponse:
        req = ApiGetKernelRequest.from_dict(body)
        kernel = self._visible(user, req.user_name, req.kernel_slug)
        version = self._version(kernel, req.version_label)
        response = ApiGetKernelResponse()
        response.metadata = self._metadata(kernel, version)
        blob = ApiKernelBlob()
        source = self.store.version_dir(kernel.owner, kernel.slug, version.number) / "source.txt"
        blob.source = source.read_text(encoding="utf-8") if source.exists() else ""
        blob.language = kernel.language
        blob.kernel_type = kernel.kernel_type
        blob.slug = kernel.slug
        response.blob = blob
        return ok(response)

    def ListKernels(self, user: str, body: dict, request: Request) -> JSONResponse:
        req = ApiListKernelsRequest.from_dict(body)
        # The CLI sends "" and "all" for "no filter"; `--mine` is group PROFILE with no user.
        owner = req.user or (user if req.group == KernelsListViewType.PROFILE else None)
        wanted_language = req.language if req.language not in (None, "", "all") else None
        wanted_type = req.kernel_type if req.kernel_type not in (None, "", "all") else None
        now = time.time()
        kernels = [
            k
            for k in sorted(self.store.all(), key=lambda k: k.id, reverse=True)
            if k.visible(now)  # a new kernel is listed only after its read-after-write lag
            and (not k.is_private or k.owner == user)
            and (owner is None or k.owner == owner)
            and (wanted_language is None or k.language == wanted_language)
            and (wanted_type is None or k.kernel_type == wanted_type)
            and (not req.search or req.search.lower() in (k.title + " " + k.slug).lower())
        ]
        page_size = req.page_size or DEFAULT_PAGE_SIZE
        page = max(req.page or 1, 1)
        response = ApiListKernelsResponse()
        response.kernels = [
            self._metadata(k) for k in kernels[(page - 1) * page_size : page * page_size]
        ]
        return ok(response)

    def DeleteKernel(self, user: str, body: dict, request: Request) -> JSONResponse:
        req = ApiDeleteKernelRequest.from_dict(body)
        kernel = self._visible(user, req.user_name, req.kernel_slug, DELETE_DENIED)
        if kernel.owner != user:
            raise ApiError(403, DELETE_DENIED)
        self.executor.kill_slug(kernel.owner, kernel.slug)
        self.store.delete(kernel.owner, kernel.slug)
        return ok(ApiDeleteKernelResponse())

    def GetAcceleratorQuotaStatistics(
        self, user: str, body: dict, request: Request
    ) -> JSONResponse:
        response = ApiGetAcceleratorQuotaStatisticsResponse()
        gpu = ApiAcceleratorQuota()
        gpu.time_used = timedelta(seconds=round(self.gpu_seconds_used(user), 3))
        gpu.total_time_allowed = timedelta(seconds=self.limits.weekly_gpu_quota_s)
        gpu.time_reserved = timedelta(0)
        gpu.has_ever_run = any(
            v.gpu for k in self.store.all() if k.owner == user for v in k.versions
        )
        response.gpu_quota = gpu
        tpu = ApiAcceleratorQuota()
        tpu_used = self.store.tpu_seconds_banked(user) + self.executor.running_gpu_seconds(
            user, "tpu"
        )
        tpu.time_used = timedelta(seconds=round(tpu_used, 3))
        tpu.total_time_allowed = timedelta(seconds=self.limits.weekly_tpu_quota_s)
        tpu.time_reserved = timedelta(0)
        response.tpu_quota = tpu
        response.quota_refresh_time = self.store.quota_refresh_time()
        return ok(response)


RPC_METHODS = (
    "SaveKernel",
    "GetKernelSessionStatus",
    "ListKernelSessionOutput",
    "GetKernel",
    "ListKernels",
    "DeleteKernel",
    "GetAcceleratorQuotaStatistics",
)
