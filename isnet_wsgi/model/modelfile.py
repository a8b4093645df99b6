"""The model file and its manifest: opened and verified once, read back in a worker."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import BinaryIO


class ModelError(RuntimeError):
    """The model file cannot be used. Start-up stops with this message."""


def read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ModelError(f"model manifest {path} is missing; run `make model`") from None
    except (OSError, ValueError) as error:
        raise ModelError(f"model manifest {path} is unreadable: {error}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("sha256"), str):
        raise ModelError(f"model manifest {path} has no sha256")
    return manifest


class ModelFile:
    """The model file, checked against its sha256 and kept open, not in memory.

    PERF: the gunicorn master keeps the model for every worker it will start.
    Held as bytes, that was 44 MB of private memory in the master for the
    server's whole life: a sixth of the replica's peak (PSS). The master now
    hashes the file in fixed-size reads and keeps only its descriptor; the data
    stays in the page cache, which the kernel can reclaim, and a new worker
    reads it back from the cache in milliseconds.

    NOTE: the descriptor is the file that was checked even if the path is
    later replaced, but a file changed in place would show the change, so
    the worker checks the sha256 again on the bytes it reads: a changed file
    stops that worker instead of loading unverified weights.
    """

    def __init__(self, path: Path, sha256: str, file: BinaryIO):
        self.path = path
        self.sha256 = sha256
        self._file: BinaryIO | None = file

    @classmethod
    def open_verified(cls, path: Path, sha256: str) -> "ModelFile":
        try:
            file = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise ModelError(f"model file {path} is missing; run `make model`") from None
        except OSError as error:
            raise ModelError(f"model file {path} is unreadable: {error}") from None
        model_file = cls(Path(path), sha256, file)
        try:
            if os.fstat(file.fileno()).st_size == 0:
                raise ModelError(f"model file {path} is empty; rebuild it with `make model`")
            # PERF: hashed in file_digest's fixed-size reads, never held whole.
            model_file._check(hashlib.file_digest(file, "sha256").hexdigest())
        except OSError as error:
            model_file.close()
            raise ModelError(f"model file {path} is unreadable: {error}") from None
        except ModelError:
            model_file.close()
            raise
        return model_file

    def verified_bytes(self) -> bytes:
        """A private copy of the file's bytes, checked again."""
        if self._file is None:
            raise ModelError(f"model file {self.path} was already loaded and released")
        try:
            size = os.fstat(self._file.fileno()).st_size
            parts, offset = [], 0
            while offset < size and (part := os.pread(self._file.fileno(), size - offset, offset)):
                parts.append(part)
                offset += len(part)
        except OSError as error:
            raise ModelError(f"model file {self.path} is unreadable: {error}") from None
        data = b"".join(parts)  # one part (the usual case) is returned, not copied
        self._check(hashlib.sha256(data).hexdigest())
        return data

    def close(self) -> None:
        """Close in this process (the worker, once its session exists)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _check(self, digest: str) -> None:
        if digest != self.sha256:
            raise ModelError(
                f"model file {self.path} does not match its manifest (sha256 {digest[:12]}..., "
                f"expected {self.sha256[:12]}...); rebuild it with `make model`")
