"""Datasets as Kaggle makes them from the API: blobs uploaded, then a private dataset processed
asynchronously, readable and attachable only once it is ready.

The flow is the official CLI's (`kaggle datasets create`): `blobs.BlobApiService/StartBlobUpload`
gives a token and an upload URL per file, the file is PUT there, and
`datasets.DatasetApiService/CreateDataset` names the tokens. Harsh as kaggle.com:

* a new dataset is private, and denied (403 `Permission 'datasets.get' was denied`) like an
  unknown one during the read-after-write lag, as kernels are;
* it is processed for `processing_s` (status BLOBS_RECEIVED, then BLOBS_DECOMPRESSED) before
  READY; a kernel pushed before then silently mounts nothing;
* an uploaded `.zip` is decompressed into a folder named after the archive (as the CLI's
  `--dir-mode zip` folders come out), not kept as a zip.

Storage: `root/blobs/<token>` (+ `.json`), `root/datasets/<owner>/<slug>/dataset.json` and
`files/`. Mounted by the executor at `<input>/datasets/<owner>/<slug>/`.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kagglesdk.blobs.types.blob_api_service import (
    ApiStartBlobUploadRequest,
    ApiStartBlobUploadResponse,
)
from kagglesdk.datasets.types.dataset_api_service import (
    ApiCreateDatasetRequest,
    ApiCreateDatasetResponse,
    ApiGetDatasetStatusRequest,
    ApiGetDatasetStatusResponse,
)
from kagglesdk.datasets.types.dataset_enums import DatabundleVersionStatus
from starlette.requests import Request
from starlette.responses import JSONResponse

from orchestrator.emulator.state import write_json_atomic
from orchestrator.emulator.wire import ApiError, ok

DATASET_DENIED = "Permission 'datasets.get' was denied"
# The official CLI refuses slugs outside 6-50 characters before it calls; the server too.
DATASET_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{4,48}[a-z0-9]$")
MAX_BLOB_BYTES = 2 * 1024**3
DATASET_METHODS = ("CreateDataset", "GetDatasetStatus")
BLOB_METHODS = ("StartBlobUpload",)


@dataclass
class DatasetRecord:
    owner: str
    slug: str
    title: str
    is_private: bool
    created_at: float
    visible_at: float
    ready_at: float

    def status(self, now: float) -> DatabundleVersionStatus:
        if now >= self.ready_at:
            return DatabundleVersionStatus.READY
        halfway = self.created_at + (self.ready_at - self.created_at) / 2
        return (
            DatabundleVersionStatus.BLOBS_RECEIVED
            if now < halfway
            else DatabundleVersionStatus.BLOBS_DECOMPRESSED
        )


class DatasetsService:
    """CreateDataset / GetDatasetStatus, StartBlobUpload and the upload URL behind it."""

    def __init__(self, root: Path, *, processing_s: float, draw_lag) -> None:
        self.root = Path(root)
        self.processing_s = processing_s
        self.draw_lag = draw_lag
        self.lock = threading.RLock()

    # -- paths -------------------------------------------------------------------------
    def _blob_path(self, token: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_-]{8,64}", token):
            raise ApiError(404, "Unknown upload")
        return self.root / "blobs" / token

    def dataset_dir(self, owner: str, slug: str) -> Path:
        return self.root / "datasets" / owner / slug

    def _record(self, owner: str, slug: str) -> DatasetRecord | None:
        try:
            data = json.loads((self.dataset_dir(owner, slug) / "dataset.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return DatasetRecord(**data)

    # -- blobs -------------------------------------------------------------------------
    def StartBlobUpload(self, user: str, body: dict, request: Request) -> JSONResponse:
        req = ApiStartBlobUploadRequest.from_dict(body)
        name = PurePosixPath(req.name or "").name
        if not name or name in (".", ".."):
            raise ApiError(400, "A blob upload needs a file name")
        if req.content_length is None or not 0 <= req.content_length <= MAX_BLOB_BYTES:
            raise ApiError(400, f"Bad content length {req.content_length!r}")
        token = secrets.token_urlsafe(18)
        path = self._blob_path(token)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"user": user, "name": name, "length": req.content_length, "complete": False}
        write_json_atomic(path.with_suffix(".json"), meta)
        response = ApiStartBlobUploadResponse()
        response.token = token
        response.create_url = f"{str(request.base_url).rstrip('/')}/_upload/{token}"
        return ok(response)

    def receive_upload(self, token: str, data: bytes) -> None:
        """The PUT to an upload URL (signed: no credentials), whole file in one request."""
        path = self._blob_path(token)
        meta_path = path.with_suffix(".json")
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise ApiError(404, "Unknown upload") from None
        if len(data) != meta["length"]:
            raise ApiError(
                400, f"Upload is {len(data)} bytes, StartBlobUpload said {meta['length']}"
            )
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
        write_json_atomic(meta_path, {**meta, "complete": True})

    # -- datasets ----------------------------------------------------------------------
    def CreateDataset(self, user: str, body: dict, request: Request) -> JSONResponse:
        req = ApiCreateDatasetRequest.from_dict(body)
        response = ApiCreateDatasetResponse()
        owner = req.owner_slug or user
        slug = req.slug or ""
        if owner != user:
            raise ApiError(403, f"Permission 'datasets.create' was denied for {owner}")
        if not DATASET_SLUG_RE.match(slug):
            response.status = "error"
            response.error = (
                f"Invalid dataset slug {slug!r}: use 6-50 lowercase letters, digits and dashes"
            )
            return ok(response)
        title = req.title or ""
        if not 6 <= len(title) <= 50:
            response.status = "error"
            response.error = "The dataset title must be between 6 and 50 characters"
            return ok(response)
        blobs = []
        for new_file in req.files or []:
            path = self._blob_path(new_file.token or "")
            try:
                meta = json.loads(path.with_suffix(".json").read_text())
            except FileNotFoundError:
                meta = None
            if meta is None or meta["user"] != user or not meta["complete"]:
                response.status = "error"
                response.error = f"Unknown or unfinished upload token {new_file.token!r}"
                return ok(response)
            blobs.append((path, meta["name"]))
        if not blobs:
            response.status = "error"
            response.error = "A dataset needs at least one file"
            return ok(response)
        with self.lock:
            directory = self.dataset_dir(owner, slug)
            if (directory / "dataset.json").exists():
                response.status = "error"
                response.error = (
                    f'The requested slug "{slug}" is already in use by a dataset. '
                    "Please choose another slug."
                )
                return ok(response)
            files = directory / "files"
            shutil.rmtree(files, ignore_errors=True)
            files.mkdir(parents=True)
            for path, name in blobs:
                _store_file(path, name, files)
            now = time.time()
            record = DatasetRecord(
                owner=owner,
                slug=slug,
                title=title,
                is_private=True if "is_private" not in req else bool(req.is_private),
                created_at=now,
                visible_at=now + self.draw_lag(),
                ready_at=now + self.processing_s,
            )
            write_json_atomic(directory / "dataset.json", record.__dict__)
        response.status = "ok"
        response.ref = f"{owner}/{slug}"
        response.url = f"{str(request.base_url).rstrip('/')}/datasets/{owner}/{slug}"
        return ok(response)

    def GetDatasetStatus(self, user: str, body: dict, request: Request) -> JSONResponse:
        req = ApiGetDatasetStatusRequest.from_dict(body)
        record = self._record(req.owner_slug or "", req.dataset_slug or "")
        now = time.time()
        # Like kernels: unknown, someone else's private one, and a new one are the same 403.
        if (
            record is None
            or (record.is_private and record.owner != user)
            or now < record.visible_at
        ):
            raise ApiError(403, DATASET_DENIED)
        response = ApiGetDatasetStatusResponse()
        response.status = record.status(now)
        return ok(response, always=("status",))

    def ready_files(self, ref: str, viewer: str) -> Path | None:
        """The files of a dataset a kernel of `viewer` may mount now; None: mounts nothing."""
        owner, _, slug = ref.partition("/")
        slug = slug.split("/")[0]  # "owner/slug/versions/N" names the latest here
        record = self._record(owner, slug)
        if record is None or (record.is_private and record.owner != viewer):
            return None
        if record.status(time.time()) != DatabundleVersionStatus.READY:
            return None
        return self.dataset_dir(owner, slug) / "files"


def _store_file(blob: Path, name: str, files: Path) -> None:
    """A plain file as itself; a zip decompressed into `<stem>/`, refusing unsafe paths."""
    if not name.lower().endswith(".zip"):
        shutil.copyfile(blob, files / name)
        return
    dest = files / name[: -len(".zip")]
    try:
        archive = zipfile.ZipFile(blob)
    except zipfile.BadZipFile:
        raise ApiError(400, f"{name} is not a readable zip archive") from None
    with archive:
        for info in archive.infolist():
            relative = PurePosixPath(info.filename)
            if relative.is_absolute() or ".." in relative.parts:
                raise ApiError(400, f"Unsafe path {info.filename!r} in {name}")
            if info.is_dir():
                continue
            target = dest.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
