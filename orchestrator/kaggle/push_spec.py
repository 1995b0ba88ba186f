"""What a push sends: the kernel-metadata.json fields plus the code, turned into a SaveKernel request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from kagglesdk.kernels.types.kernels_api_service import ApiSaveKernelRequest
from kagglesdk.kernels.types.kernels_enums import KernelExecutionType
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KERNEL_METADATA_FILE = "kernel-metadata.json"


class PushSpec(BaseModel):
    """One kernel version to push, with the official CLI's defaults for anything left out."""

    model_config = ConfigDict(frozen=True)

    id: str | None = Field(default=None, description="owner/slug")
    id_no: int | None = None
    title: str | None = None
    text: str = Field(repr=False)
    language: Literal["python", "r", "rmarkdown"] = "python"
    kernel_type: Literal["script", "notebook"] = "script"
    is_private: bool = True
    enable_gpu: bool = False
    enable_tpu: bool = False
    enable_internet: bool = True
    machine_shape: str | None = None
    dataset_sources: list[str] = Field(default_factory=list)
    kernel_sources: list[str] = Field(default_factory=list)
    model_sources: list[str] = Field(default_factory=list)
    competition_sources: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    docker_image_pinning_type: Literal["original", "latest"] | None = None
    docker_image: str | None = None
    session_timeout_seconds: int | None = None
    no_run: bool = False

    @field_validator("title")
    @classmethod
    def _title_long_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 5:
            raise ValueError("title must be at least five characters")
        return value

    @field_validator("id")
    @classmethod
    def _id_is_owner_slug(cls, value: str | None) -> str | None:
        if value is not None and (value.count("/") != 1 or not all(value.split("/"))):
            raise ValueError(f"kernel id {value!r} must read owner/slug")
        return value

    @model_validator(mode="after")
    def _has_identity(self) -> PushSpec:
        if not self.id and self.id_no is None:
            raise ValueError("a kernel id (owner/slug) or id_no is required")
        return self

    @property
    def owner(self) -> str | None:
        return self.id.split("/")[0] if self.id else None

    @property
    def slug(self) -> str | None:
        return self.id.split("/")[1] if self.id else None

    def to_request(self) -> ApiSaveKernelRequest:
        """The SaveKernel request, built field by field as `KaggleApi.kernels_push` builds it."""
        language = (
            "r"
            if self.kernel_type == "notebook" and self.language == "rmarkdown"
            else self.language
        )
        request = ApiSaveKernelRequest()
        request.id = self.id_no
        request.slug = self.id
        request.new_title = self.title
        request.text = self.text
        request.language = language
        request.kernel_type = self.kernel_type
        request.is_private = self.is_private
        request.enable_gpu = self.enable_gpu
        request.enable_tpu = self.enable_tpu
        request.enable_internet = self.enable_internet
        request.dataset_data_sources = list(self.dataset_sources)
        request.competition_data_sources = list(self.competition_sources)
        request.kernel_data_sources = list(self.kernel_sources)
        request.model_data_sources = list(self.model_sources)
        request.category_ids = list(self.keywords)
        request.docker_image_pinning_type = self.docker_image_pinning_type
        request.docker_image = self.docker_image
        if self.session_timeout_seconds:
            request.session_timeout_seconds = int(self.session_timeout_seconds)
        request.machine_shape = self.machine_shape
        if self.no_run:
            request.kernel_execution_type = KernelExecutionType.QUICK_SAVE
        return request

    @classmethod
    def from_kernel_folder(
        cls, folder: str | Path, *, timeout: int | None = None, accelerator: str | None = None
    ) -> PushSpec:
        """Read a folder holding kernel-metadata.json and its code file, as `kaggle kernels push` does."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"Invalid folder: {folder}")
        meta_file = folder / KERNEL_METADATA_FILE
        if not meta_file.is_file():
            raise ValueError(f"Metadata file not found: {meta_file}")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        code_path = meta.get("code_file") or ""
        if not code_path:
            raise ValueError(f"{meta_file}: a source file must be specified in code_file")
        code_file = folder / code_path
        if not code_file.is_file():
            raise ValueError(f"Source file not found: {code_file}")
        text = code_file.read_text(encoding="utf-8")
        kernel_type = meta.get("kernel_type", "")
        if kernel_type == "notebook":
            text = _strip_notebook_outputs(text)
        return cls(
            id=meta.get("id"),
            id_no=meta.get("id_no"),
            title=meta.get("title"),
            text=text,
            language=meta.get("language", ""),
            kernel_type=kernel_type,
            is_private=_metadata_bool(meta, "is_private", True),
            enable_gpu=_metadata_bool(meta, "enable_gpu", False),
            enable_tpu=_metadata_bool(meta, "enable_tpu", False),
            enable_internet=_metadata_bool(meta, "enable_internet", True),
            machine_shape=accelerator or meta.get("machine_shape"),
            dataset_sources=meta.get("dataset_sources", []),
            kernel_sources=meta.get("kernel_sources", []),
            model_sources=meta.get("model_sources", []),
            competition_sources=meta.get("competition_sources", []),
            keywords=meta.get("keywords", []),
            docker_image_pinning_type=meta.get("docker_image_pinning_type"),
            docker_image=meta.get("docker_image"),
            session_timeout_seconds=timeout,
        )


def _metadata_bool(meta: dict, key: str, default: bool) -> bool:
    value = meta.get(key, default)
    if isinstance(value, str):
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"Invalid boolean value for {key}: {value}")
    return bool(value)


def _strip_notebook_outputs(text: str) -> str:
    # Kaggle expects code cells without outputs and each cell's source as one string.
    notebook = json.loads(text)
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code" and "outputs" in cell:
            cell["outputs"] = []
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(cell["source"])
    return json.dumps(notebook)
