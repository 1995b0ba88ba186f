"""The Starlette application: Kaggle's routes, signed output URLs, the live log, the test API."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kagglesdk.security.types.oauth_service import IntrospectTokenRequest, IntrospectTokenResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from orchestrator.capacity import SESSION_LIMIT_S
from orchestrator.emulator.api import RPC_METHODS, KernelsService, Limits
from orchestrator.emulator.auth import authenticate, user_for_token
from orchestrator.emulator.datasets import (
    BLOB_METHODS,
    DATASET_METHODS,
    DatasetsService,
)
from orchestrator.emulator.executor import (
    Executor,
    ExecutorOptions,
    image_lacks_modules,
    read_log,
)
from orchestrator.emulator.faults import FaultBook, FaultRule, parse_spec
from orchestrator.emulator.middleware import EmulatorMiddleware, RateLimiter
from orchestrator.emulator.state import ACTIVE_STATUSES, Store
from orchestrator.emulator.wire import ApiError, error, ok

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
LOG_POLL_S = 0.2
UNAUTHENTICATED = "Unauthenticated: send HTTP Basic user:key or a Bearer token"


@dataclass
class EmulatorOptions:
    root: Path
    users: dict[str, str]
    max_session_s: float = SESSION_LIMIT_S
    gpu_slots: int = 2
    cpu_slots: int = 5
    tpu_slots: int = 1
    weekly_gpu_quota_h: float = 30
    queue_delay_s: float = 60.0
    gpu_queue_delay_s: float = 300.0
    boot_time_s: float = 20.0
    kill_grace_s: float = 0.0
    read_lag_s: tuple[float, float] = (2.0, 8.0)
    seed: int | None = None
    rate_limit: tuple[int, float] = (40, 60.0)
    honest_exit_status: bool = False
    legacy_mounts: bool = False
    dataset_processing_s: float = 30.0
    image_lacks: tuple[str, ...] = ("stable-baselines3", "sb3-contrib")
    known_images: tuple[str, ...] = ()
    faults: str = ""
    test_api: bool = False
    extra: dict = field(default_factory=dict)


def create_app(options: EmulatorOptions) -> Starlette:
    store = Store(options.root)
    executor = Executor(
        store,
        ExecutorOptions(
            max_session_s=options.max_session_s,
            queue_delay_s=options.queue_delay_s,
            gpu_queue_delay_s=options.gpu_queue_delay_s,
            kill_grace_s=options.kill_grace_s,
            boot_time_s=options.boot_time_s,
            honest_exit_status=options.honest_exit_status,
            legacy_mounts=options.legacy_mounts,
            image_lacks_modules=tuple(image_lacks_modules(list(options.image_lacks))),
        ),
    )
    rules, seed = parse_spec(options.faults)
    faults = FaultBook(rules, seed)
    limits = Limits(
        max_session_s=options.max_session_s,
        gpu_slots=options.gpu_slots,
        cpu_slots=options.cpu_slots,
        tpu_slots=options.tpu_slots,
        weekly_gpu_quota_s=options.weekly_gpu_quota_h * 3600,
        read_lag_s=options.read_lag_s,
        seed=options.seed,
        known_images=tuple(options.known_images),
    )
    service = KernelsService(store, executor, limits, faults)
    datasets = DatasetsService(
        options.root, processing_s=options.dataset_processing_s, draw_lag=service._draw_lag
    )
    executor.datasets = datasets  # dataset sources are mounted from here
    users = options.users

    async def read_body(request: Request) -> dict:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"Request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "Request body must be a JSON object")
        return body

    def service_rpc(service_name: str, methods: tuple[str, ...], handlers):
        """`POST .../{service_name}/{method}`: authenticated, dispatched to `handlers.<method>`."""

        async def handle(request: Request) -> Response:
            method = request.path_params["method"]
            if method not in methods:
                return error(404, f"Unknown method {service_name}/{method}")
            user = authenticate(request, users)
            if user is None:
                return error(401, UNAUTHENTICATED)
            try:
                body = await read_body(request)
                return await asyncio.to_thread(getattr(handlers, method), user, body, request)
            except ApiError as exc:
                return error(exc.code, exc.message)

        return handle

    async def upload(request: Request) -> Response:
        try:
            data = await request.body()
            await asyncio.to_thread(datasets.receive_upload, request.path_params["token"], data)
        except ApiError as exc:
            return error(exc.code, exc.message)
        return JSONResponse({})

    async def introspect(request: Request) -> Response:
        try:
            req = IntrospectTokenRequest.from_dict(await read_body(request))
        except ApiError as exc:
            return error(exc.code, exc.message)
        response = IntrospectTokenResponse()
        name = user_for_token(users, req.token) if req.token else None
        if name is not None:
            response.active = True
            response.username = name
            response.client_id = "kaggle-emulator"
        return ok(response, always=("active",))

    async def log_stream(request: Request) -> Response:
        user = authenticate(request, users)
        if user is None:
            return error(401, UNAUTHENTICATED)
        owner, slug = request.path_params["owner"], request.path_params["slug"]
        try:
            kernel = service._visible(user, owner, slug)
            version = service._version(kernel, request.query_params.get("versionLabel"))
        except ApiError as exc:
            return error(exc.code, exc.message)
        path = store.log_path(owner, slug, version.number)
        if version.status not in ACTIVE_STATUSES:
            entries, _ = read_log(path)
            return JSONResponse(entries)

        async def events():
            offset = 0
            while True:
                current = store.get(owner, slug)
                current_version = current.version(version.number) if current else None
                finished = current_version is None or current_version.status not in ACTIVE_STATUSES
                entries, offset = read_log(path, offset)
                for entry in entries:
                    yield f"data: {json.dumps(entry)}\n\n"
                if finished:
                    entries, offset = read_log(path, offset)  # lines written just before the end
                    for entry in entries:
                        yield f"data: {json.dumps(entry)}\n\n"
                    yield "data: END_OF_LOG\n\n"
                    return
                await asyncio.sleep(LOG_POLL_S)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def download(request: Request) -> Response:
        found = store.find_output(request.path_params["token"])
        if found is None:
            return Response("Not found", status_code=404)
        kernel, version = found
        working = store.working_dir(kernel.owner, kernel.slug, version.number).resolve()
        target = (working / request.path_params["path"]).resolve()
        if working not in target.parents or not target.is_file():
            return Response("Not found", status_code=404)
        return FileResponse(target, media_type="application/octet-stream")

    # -- control API for tests (loopback only, only with --test-api) --------------------
    def control(handler):
        async def guarded(request: Request) -> Response:
            if not options.test_api:
                return error(404, "The emulator's test API is off (start it with --test-api)")
            if request.client is None or request.client.host not in LOOPBACK_HOSTS:
                return error(403, "The emulator's test API answers loopback clients only")
            return await handler(request)

        return guarded

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "users": sorted(users)})

    async def calls(request: Request) -> Response:
        return JSONResponse(dict(faults.calls))

    async def set_faults(request: Request) -> Response:
        body = await request.json()
        if "spec" in body:
            rules, seed = parse_spec(body["spec"])
        else:
            rules = [FaultRule.model_validate(r) for r in body.get("rules", [])]
            seed = body.get("seed")
        faults.set_rules(rules, seed, append=bool(body.get("append")))
        return JSONResponse({"rules": [r.model_dump() for r in faults.rules]})

    async def clear_faults(request: Request) -> Response:
        faults.set_rules([])
        return JSONResponse({"rules": []})

    async def kill(request: Request) -> Response:
        body = await request.json()
        killed = executor.kill(
            body["owner"],
            body["slug"],
            as_timeout=bool(body.get("as_timeout")),
            at_session_s=body.get("at_session_s"),
        )
        if not killed:
            return error(404, f"No running session for {body['owner']}/{body['slug']}")
        return JSONResponse({"killed": True})

    async def gpu_used(request: Request) -> Response:
        body = await request.json()
        store.set_gpu_seconds(body["user"], float(body["seconds"]))
        return JSONResponse({"user": body["user"], "seconds": float(body["seconds"])})

    async def docker_image(request: Request) -> Response:
        body = await request.json()
        service.forced_docker_image = body.get("image") or None
        return JSONResponse({"image": service.forced_docker_image})

    @asynccontextmanager
    async def lifespan(app):
        executor.recover()
        yield
        executor.shutdown()

    routes = [
        Route(
            "/api/v1/kernels.KernelsApiService/{method}",
            service_rpc("kernels.KernelsApiService", RPC_METHODS, service),
            methods=["POST"],
        ),
        Route("/api/v1/security.OAuthService/IntrospectToken", introspect, methods=["POST"]),
        Route(
            "/api/v1/datasets.DatasetApiService/{method}",
            service_rpc("datasets.DatasetApiService", DATASET_METHODS, datasets),
            methods=["POST"],
        ),
        Route(
            "/api/v1/blobs.BlobApiService/{method}",
            service_rpc("blobs.BlobApiService", BLOB_METHODS, datasets),
            methods=["POST"],
        ),
        Route("/_upload/{token}", upload, methods=["PUT"]),
        Route("/api/v1/kernels/logs/stream/{owner}/{slug}", log_stream, methods=["GET"]),
        Route("/_out/{token}/{path:path}", download, methods=["GET", "HEAD"]),
        Route("/_emulator/health", health, methods=["GET"]),
        Route("/_emulator/calls", control(calls), methods=["GET"]),
        Route("/_emulator/faults", control(set_faults), methods=["POST"]),
        Route("/_emulator/faults", control(clear_faults), methods=["DELETE"]),
        Route("/_emulator/kill", control(kill), methods=["POST"]),
        Route("/_emulator/gpu-used", control(gpu_used), methods=["POST"]),
        Route("/_emulator/docker-image", control(docker_image), methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                EmulatorMiddleware,
                faults=faults,
                users=users,
                limiter=RateLimiter(*options.rate_limit),
            )
        ],
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.executor = executor
    app.state.faults = faults
    return app
