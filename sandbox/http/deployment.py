"""Deployment packages: a function's code as CreateFunction and
UpdateFunctionCode receive it.

``Code.ZipFile`` (the zip's bytes; boto3 base64-encodes them on the wire) is
unpacked into ``STATE_DIR/packages/<function>/<random>/`` with Lambda's size
quotas and without trusting a single name in the archive: no absolute paths,
no ``..``, no symbolic links, no device files. ``Code.S3Bucket`` set to
``hot-reload`` with ``Code.S3Key`` naming a local directory (LocalStack's
convention) uses that directory in place.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import shutil
import stat
import uuid
import zipfile
from collections.abc import Mapping
from typing import Any

from ..constants import LOCAL_CODE_BUCKET, ZIP_ENTRIES_MAX, ZIP_UNZIPPED_MAX, ZIP_UPLOAD_MAX
from ..errors import InvalidParameterValueException, RequestTooLargeException

_COPY_CHUNK = 1024 * 1024


def resolve_code(code: Mapping[str, Any], root: str) -> str:
    """The directory of the code a request names (unpacking a zip).

    Args:
        code: the request's ``Code`` object (or UpdateFunctionCode's body).
        root: the function's directory of unpacked packages (a zip goes to a
            new directory under it).
    Raises:
        InvalidParameterValueException: no usable code source, a bad zip, a
            missing local directory, or an S3 location (no S3 here).
        RequestTooLargeException: the zip is over Lambda's quotas.
    """
    zipped = code.get("ZipFile")
    bucket, key = code.get("S3Bucket"), code.get("S3Key")
    if code.get("ImageUri"):
        raise InvalidParameterValueException(
            "container images (Code.ImageUri) are not supported: use Code.ZipFile or a "
            f"local directory (Code.S3Bucket={LOCAL_CODE_BUCKET!r}, Code.S3Key=<directory>)")
    if zipped is not None:
        return unpack_zip(_decode_zip(zipped), root)
    if bucket == LOCAL_CODE_BUCKET and isinstance(key, str):
        directory = os.path.abspath(os.path.expanduser(key))
        if not os.path.isdir(directory):
            raise InvalidParameterValueException(
                f"Code.S3Key must name an existing local directory when Code.S3Bucket is "
                f"{LOCAL_CODE_BUCKET!r}, got {key!r}")
        return directory
    if bucket is not None:
        raise InvalidParameterValueException(
            f"S3 is not available here: upload Code.ZipFile, or use a local directory with "
            f"Code.S3Bucket={LOCAL_CODE_BUCKET!r} and Code.S3Key=<directory> (got bucket "
            f"{bucket!r})")
    raise InvalidParameterValueException(
        "Code needs ZipFile, or S3Bucket='hot-reload' with S3Key=<local directory>")


def _decode_zip(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        data = bytes(value)
    elif isinstance(value, str):
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidParameterValueException(
                "Code.ZipFile must be base64-encoded zip bytes") from None
    else:
        raise InvalidParameterValueException(
            f"Code.ZipFile must be base64-encoded zip bytes, got {type(value).__name__}")
    if len(data) > ZIP_UPLOAD_MAX:
        raise RequestTooLargeException(
            f"Unzipped size must be smaller than {ZIP_UNZIPPED_MAX} bytes; a zip uploaded "
            f"directly must be at most {ZIP_UPLOAD_MAX} bytes (got {len(data)})")
    return data


def unpack_zip(data: bytes, root: str) -> str:
    """Unpacks a zip into a new directory under ``root``; returns it.

    Raises:
        InvalidParameterValueException: not a zip, or an entry with an unsafe
            name or type (named in the message).
        RequestTooLargeException: more than 250 MB unzipped or too many entries.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise InvalidParameterValueException(f"Could not unzip uploaded file: {exc}") from None
    with archive:
        entries = archive.infolist()
        if len(entries) > ZIP_ENTRIES_MAX:
            raise RequestTooLargeException(
                f"the zip has {len(entries)} entries, at most {ZIP_ENTRIES_MAX} are accepted")
        # file_size bounds what ZipExtFile returns, so this sum bounds the disk used.
        total = sum(entry.file_size for entry in entries)
        if total > ZIP_UNZIPPED_MAX:
            raise RequestTooLargeException(
                f"Unzipped size must be smaller than {ZIP_UNZIPPED_MAX} bytes (got {total})")
        for entry in entries:
            _check_entry(entry)
        target = os.path.join(root, uuid.uuid4().hex)
        os.makedirs(target, mode=0o755)
        try:
            for entry in entries:
                _extract(archive, entry, target)
        except OSError as exc:
            shutil.rmtree(target, ignore_errors=True)
            # a duplicate entry, or a file where a directory must be
            raise InvalidParameterValueException(
                f"Could not unzip uploaded file: {exc.strerror}: {exc.filename}") from None
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
    return target


def _check_entry(entry: zipfile.ZipInfo) -> None:
    name = entry.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise InvalidParameterValueException(
            f"Could not unzip uploaded file: entry {name!r} would be written outside the "
            "function's directory")
    mode = entry.external_attr >> 16
    # Archivers that record no file type (zipfile.writestr, Windows tools) leave it 0.
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        raise InvalidParameterValueException(
            f"Could not unzip uploaded file: entry {name!r} is {kind}")


def _extract(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, target: str) -> None:
    path = os.path.join(target, *[p for p in entry.filename.split("/") if p not in ("", ".")])
    if entry.is_dir():
        os.makedirs(path, mode=0o755, exist_ok=True)
        return
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    # Lambda keeps the owner's execute bit; everything is readable, nothing writable
    # by others (environments run as another uid).
    executable = (entry.external_attr >> 16) & 0o100
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o755 if executable else 0o644)
    with os.fdopen(fd, "wb") as out, archive.open(entry) as source:
        shutil.copyfileobj(source, out, _COPY_CHUNK)


def remove_unused(root: str, keep: set[str]) -> None:
    """Removes unpacked packages under ``root`` other than ``keep``."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return
    for name in names:
        path = os.path.join(root, name)
        if path not in keep:
            shutil.rmtree(path, ignore_errors=True)
