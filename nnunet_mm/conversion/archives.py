"""Source folders given as archives (``.zip``, ``.tar``, ``.tar.gz``, ``.tgz``): safe extraction and path checks,
and the files of a source folder without the hidden and macOS entries that archives bring along.

Challenge data arrive as archives. Extraction refuses every member that would land outside the destination
(absolute names, ``..`` components, links pointing out), names the archive and the member, and extracts
nothing in that case. Errors about the extracted files name them inside the archive (:func:`source_folder`).
"""
from __future__ import annotations

import contextlib
import os
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from nnunet_mm.conversion.errors import ConversionError
from nnunet_mm.conversion.slices import natural_key

ARCHIVE_ENDINGS = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
IGNORED_PREFIXES = (".", "__MACOSX")  # hidden files and folders, macOS resource forks (__MACOSX/) in zip files
EXTRACTION_PREFIX = "nnunet_mm_extract_"  # name prefix of the temporary folders archives are extracted into


def is_archive(path: Path) -> bool:
    """True for a file whose name ends in one of :data:`ARCHIVE_ENDINGS`."""
    name = Path(path).name.lower()
    return Path(path).is_file() and name.endswith(ARCHIVE_ENDINGS)


def _escapes(name: str) -> bool:
    pure = PurePosixPath(name.replace("\\", "/"))
    return pure.is_absolute() or ".." in pure.parts or (len(name) > 1 and name[1] == ":")


def unsafe_members(archive: Path) -> list[str]:
    """Names of the members of ``archive`` that would be written outside the extraction folder."""
    archive = Path(archive)
    bad = []
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as handle:
            for info in handle.infolist():
                if _escapes(info.filename):
                    bad.append(info.filename)
                elif (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symbolic link stored in the zip
                    bad.append(f"{info.filename} (symbolic link)")
        return bad
    with tarfile.open(archive) as handle:
        for member in handle.getmembers():
            if _escapes(member.name):
                bad.append(member.name)
            elif member.issym() or member.islnk():
                target = PurePosixPath(member.name).parent / member.linkname
                if member.linkname.startswith("/") or _escapes(str(target)):
                    bad.append(f"{member.name} -> {member.linkname}")
            elif not (member.isfile() or member.isdir()):
                bad.append(f"{member.name} (device or fifo)")
    return bad


def extract_archive(archive: Path, destination: Path) -> Path:
    """Extract ``archive`` into ``destination`` after checking every member.

    Raises:
        ValueError: members escaping ``destination`` (all listed, nothing extracted), or an unreadable archive.
    """
    archive, destination = Path(archive), Path(destination)
    try:
        bad = unsafe_members(archive)
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as error:
        raise ValueError(f"{archive}: cannot read archive: {error}") from None
    if bad:
        raise ValueError(f"{archive}: refusing to extract: {len(bad)} member(s) would be written outside the "
                         f"extraction folder (path escaping the input): {bad[:5]}")
    destination.mkdir(parents=True, exist_ok=True)
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as handle:
            handle.extractall(destination)
    else:
        with tarfile.open(archive) as handle:
            handle.extractall(destination, filter="data")
    return destination


@contextlib.contextmanager
def source_folder(source: Path) -> Iterator[Path]:
    """Yield a folder to read the source data from: ``source`` itself, or, for an archive, a temporary folder it was
    safely extracted into (removed afterwards). When the archive holds a single top-level folder, that folder is
    yielded.

    For an archive, a :class:`ValueError` (:class:`ConversionError` included) raised inside the ``with`` block has
    the files of the temporary folder named as ``<archive>:<path in the archive>`` in its message (and problems),
    e.g. ``amos22.zip:amos22/labelsTr/amos_0001.nii.gz``: the temporary folder is gone once the error is seen."""
    source = Path(source)
    if not is_archive(source):
        yield source
        return
    with tempfile.TemporaryDirectory(prefix=EXTRACTION_PREFIX) as temp:
        extract_archive(source, Path(temp))
        entries = [p for p in Path(temp).iterdir() if not p.name.startswith(IGNORED_PREFIXES)]
        try:
            yield entries[0] if len(entries) == 1 and entries[0].is_dir() else Path(temp)
        except ValueError as error:
            _name_archive_members(error, Path(temp), source)
            raise


def source_path_name(path: Path, root: Path, source: Path) -> str:
    """How to name ``path``, a file under the folder ``root`` that :func:`source_folder` yielded for ``source``, in
    output that outlives the ``with`` block (summaries, QA files): ``str(path)`` for a folder source,
    ``<archive>:<path in the archive>`` for an archive (the temporary folder is gone by then)."""
    path, root, source = Path(path), Path(root), Path(source)
    if not is_archive(source):
        return str(path)
    extracted = root.parent if root.parent.name.startswith(EXTRACTION_PREFIX) else root  # see source_folder
    try:
        return f"{source}:{path.relative_to(extracted).as_posix()}"
    except ValueError:  # not under the extraction folder
        return str(path)


def _name_archive_members(error: ValueError, extracted: Path, archive: Path) -> None:
    """Rewrite, in place, the paths under ``extracted`` (where ``archive`` was extracted) in the message of ``error``
    and in the problems of a :class:`ConversionError` into ``<archive>:<path in the archive>``."""
    prefixes = sorted({str(extracted), str(extracted.resolve())}, key=len, reverse=True)  # resolved: check_inside

    def rename(text: str) -> str:
        for prefix in prefixes:
            for separator in dict.fromkeys(("/", os.sep)):
                text = text.replace(prefix + separator, f"{archive}:")
            text = text.replace(prefix, str(archive))
        return text

    error.args = tuple(rename(arg) if isinstance(arg, str) else arg for arg in error.args)
    if isinstance(error, ConversionError):
        error.problems = [rename(problem) for problem in error.problems]


def check_inside(path: Path, root: Path) -> None:
    """Raise ValueError naming ``path`` when it resolves (following symbolic links) outside ``root``."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    if resolved != base and not resolved.is_relative_to(base):
        raise ValueError(f"{path}: resolves to {resolved}, outside the input folder {root} (path escaping the "
                         f"input); refusing to read it.")


def source_files(root: Path) -> list[Path]:
    """Every regular file under ``root``, recursively, except those with a path component starting with one of
    :data:`IGNORED_PREFIXES`; sorted by path with numbers compared numerically ("Training Batch 2" before
    "Training Batch 10")."""
    root = Path(root)
    files = [p for p in root.rglob("*")
             if p.is_file() and not any(part.startswith(IGNORED_PREFIXES) for part in p.relative_to(root).parts)]
    return sorted(files, key=lambda p: [natural_key(part) for part in p.relative_to(root).parts])
