"""Private datasets from local files, as the official CLI's `kaggle datasets create` makes them.

Per file: `blobs.BlobApiService/StartBlobUpload` (a token and an upload URL), then a PUT of
the bytes to that URL (signed: sent without our credentials). Then
`datasets.DatasetApiService/CreateDataset` names the tokens. Kaggle processes a new dataset
asynchronously: `GetDatasetStatus` answers 403 for a while (like a new kernel), then a
processing status, then READY; only a READY dataset is attached to a kernel pushed later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kagglesdk.blobs.types.blob_api_service import (
    ApiBlobType,
    ApiStartBlobUploadRequest,
    ApiStartBlobUploadResponse,
)
from kagglesdk.datasets.types.dataset_api_service import (
    ApiCreateDatasetRequest,
    ApiCreateDatasetResponse,
    ApiDatasetNewFile,
    ApiGetDatasetStatusRequest,
    ApiGetDatasetStatusResponse,
)

from .errors import AuthenticationError, BadRequest, KaggleError, NotFoundError
from .rpc import TRANSPORT_FAILURES, Transient, check_response, final_error

DATASETS = "datasets.DatasetApiService"
BLOBS = "blobs.BlobApiService"
READY = "READY"
# GetDatasetStatus's 403/404: unknown, someone else's private dataset, or one created moments
# ago (the read-after-write lag). Not a status Kaggle sends; ours for "cannot see it yet".
NOT_VISIBLE = "NOT_VISIBLE"
IN_USE = "already in use"


@dataclass(frozen=True)
class DatasetRef:
    owner: str
    slug: str
    created: bool  # False: the slug was already ours (an earlier upload of the same files)

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.slug}"


def upload_blob(client, path: Path) -> str:
    """StartBlobUpload, then PUT the file to the URL it gave; returns the blob token."""
    request = ApiStartBlobUploadRequest()
    request.type = ApiBlobType.DATASET
    request.name = path.name
    request.content_length = path.stat().st_size
    request.last_modified_epoch_seconds = int(path.stat().st_mtime)
    request.content_type = "application/octet-stream"
    client._ready()
    started = client._rpc.call(BLOBS, "StartBlobUpload", request, ApiStartBlobUploadResponse)
    if not started.token or not started.create_url:
        raise KaggleError(f"StartBlobUpload for {path.name} returned no upload URL")
    url = client._absolute(started.create_url)
    data = path.read_bytes()
    for attempt in client.retry.retrying(Transient):
        with attempt:
            try:
                response = client._anonymous_http.put(
                    url,
                    content=data,
                    headers={"Content-Type": "application/octet-stream"},
                )
            except TRANSPORT_FAILURES as exc:
                raise Transient(f"upload of {path.name}: {exc}") from None
            check_response(response, expect_json=False, method="upload")
    return started.token


def create_dataset(
    client, owner: str, slug: str, title: str, files: list[Path], *, private: bool = True
) -> DatasetRef:
    """A new private dataset holding `files`. A slug already in use by this account counts as
    created (names are derived from content, so it is an earlier upload of the same files)."""
    tokens = [upload_blob(client, path) for path in files]
    request = ApiCreateDatasetRequest()
    request.owner_slug = owner
    request.slug = slug
    request.title = title
    request.license_name = "unknown"
    request.is_private = private
    request.files = [_new_file(token) for token in tokens]
    client._ready()
    try:
        # Not idempotent: one attempt; a lost answer is settled by the status check below.
        response = client._rpc.call_once(
            DATASETS, "CreateDataset", request, ApiCreateDatasetResponse
        )
    except Transient as exc:
        if dataset_status(client, owner, slug) == NOT_VISIBLE:
            raise final_error(exc, "CreateDataset") from None
        return DatasetRef(owner, slug, created=True)
    if response.error:
        if IN_USE in response.error:
            return DatasetRef(owner, slug, created=False)
        raise BadRequest(f"Kaggle refused to create dataset {owner}/{slug}: {response.error}")
    return DatasetRef(owner, slug, created=True)


def _new_file(token: str) -> ApiDatasetNewFile:
    new_file = ApiDatasetNewFile()
    new_file.token = token
    return new_file


def dataset_status(client, owner: str, slug: str) -> str:
    """READY, a processing status (e.g. BLOBS_RECEIVED), or NOT_VISIBLE (403/404)."""
    request = ApiGetDatasetStatusRequest()
    request.owner_slug = owner
    request.dataset_slug = slug
    client._ready()
    try:
        response = client._rpc.call(
            DATASETS, "GetDatasetStatus", request, ApiGetDatasetStatusResponse
        )
    except NotFoundError:
        return NOT_VISIBLE
    except AuthenticationError as exc:
        if exc.status_code == 403:
            return NOT_VISIBLE
        raise
    status = response.status
    return getattr(status, "name", str(status))
