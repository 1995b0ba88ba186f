"""Extract a zip that came over the network without trusting a byte of it.

Every entry is checked before anything is written: no absolute paths, no `..`, no
symlinks, no device files or fifos, no duplicate names, and no more than a cap of
entries and bytes. While writing, the bytes really produced are counted again (a zip's
declared sizes can lie), so a zip bomb stops at the cap instead of filling the disk.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# A Kaggle session has about 20 GB of /kaggle/working: no honest archive is larger.
DEFAULT_MAX_TOTAL_BYTES = 20 * 1024**3
DEFAULT_MAX_ENTRIES = 200_000
_COPY_CHUNK = 1 << 20


class UnsafeArchive(ValueError):
    """The archive holds an entry that must not be extracted; nothing was written outside dest."""


@dataclass(frozen=True)
class ExtractedFile:
    name: str  # posix path relative to the extraction dir
    size: int


def _entry_mode(info: zipfile.ZipInfo) -> int:
    # Unix permission and type bits live in the high 16 bits when the zip was made on unix.
    return (info.external_attr >> 16) & 0xFFFF if info.create_system == 3 else 0


def checked_name(name: str) -> PurePosixPath:
    """The entry's relative path, or UnsafeArchive if it could land outside the target dir."""
    if not name or "\x00" in name:
        raise UnsafeArchive(f"entry {name!r}: empty name or NUL byte")
    posix = name.replace(
        "\\", "/"
    )  # a backslash is a separator to some extractors: treat it as one
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        raise UnsafeArchive(f"entry {name!r}: absolute path")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"entry {name!r}: '..' in path")
    if not parts:
        raise UnsafeArchive(f"entry {name!r}: names no file")
    return PurePosixPath(*parts)


def check_entries(
    archive: zipfile.ZipFile,
    *,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Validate every entry up front; returns (info, relative path) for each file and dir."""
    infos = archive.infolist()
    if len(infos) > max_entries:
        raise UnsafeArchive(f"{len(infos)} entries, more than the cap of {max_entries}")
    seen: set[PurePosixPath] = set()
    declared = 0
    checked = []
    for info in infos:
        path = checked_name(info.filename)
        mode = _entry_mode(info)
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise UnsafeArchive(f"entry {info.filename!r}: symbolic link")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchive(f"entry {info.filename!r}: special file (device, fifo or socket)")
        if path in seen:
            raise UnsafeArchive(f"entry {info.filename!r}: appears twice")
        seen.add(path)
        declared += info.file_size
        if declared > max_total_bytes:
            raise UnsafeArchive(f"declared size exceeds the cap of {max_total_bytes} bytes")
        checked.append((info, path))
    # A file and a directory of the same name (a/b as a file and a/b/c) cannot both exist.
    files = {p for i, p in checked if not i.is_dir()}
    for path in seen:
        for parent in path.parents:
            if parent in files:
                raise UnsafeArchive(f"entry {str(path)!r}: its parent {str(parent)!r} is a file")
    return checked


def safe_extract(
    zip_path: Path,
    dest: Path,
    *,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> list[ExtractedFile]:
    """Extract `zip_path` into the new or empty directory `dest`.

    Raises UnsafeArchive (and removes what it wrote) if any entry is unsafe or the bytes
    written would pass `max_total_bytes`; zipfile.BadZipFile if it is not a zip at all.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ValueError(f"{dest} is not empty; extract into a fresh directory")
    root = dest.resolve()
    written = 0
    extracted: list[ExtractedFile] = []
    try:
        with zipfile.ZipFile(zip_path) as archive:
            entries = check_entries(
                archive, max_total_bytes=max_total_bytes, max_entries=max_entries
            )
            for info, rel in entries:
                target = root.joinpath(*rel.parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                # Belt and braces: the resolved parent must still be inside dest.
                if not target.parent.resolve().is_relative_to(root):
                    raise UnsafeArchive(f"entry {info.filename!r} resolves outside {dest}")
                size = 0
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                with archive.open(info) as source, os.fdopen(fd, "wb") as sink:
                    while chunk := source.read(_COPY_CHUNK):
                        size += len(chunk)
                        written += len(chunk)
                        if written > max_total_bytes:
                            raise UnsafeArchive(
                                f"entry {info.filename!r}: extracted bytes pass the cap of "
                                f"{max_total_bytes} (a zip bomb?)"
                            )
                        sink.write(chunk)
                extracted.append(ExtractedFile(str(rel), size))
    except (zlib.error, EOFError) as error:
        _empty(dest)
        raise zipfile.BadZipFile(f"corrupt archive member: {error}") from None
    except BaseException:
        _empty(dest)
        raise
    return extracted


def _empty(dest: Path) -> None:
    for child in list(dest.iterdir()):
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
