"""Where the weights come from: the npm data package, or a file the user gives.

The npm package @imgly/background-removal-data ships ISNet as 4 MB chunks
named by their sha256, listed in dist/resources.json. We fetch it with the
user's own `npm pack` (so npm's configuration decides the registry), check
the tarball against a pinned sha256, and reassemble `/models/medium` (the
fp16 ISNet) from its chunks, checking each chunk and the total size.
Everything is cached by sha256, so a second build downloads nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

NPM_PACKAGE = "@imgly/background-removal-data"
NPM_VERSION = "1.4.5"
NPM_RESOURCE = "/models/medium"
# Pinned: npm versions are immutable, so these never change for 1.4.5.
TARBALL_SHA256 = "ca7789abb39370727c9a098310b53bce41518d200000423c7107f8c01bbce946"
MODEL_SHA256 = "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb"
MODEL_SIZE_BYTES = 88188479


class SourceError(RuntimeError):
    """The weights could not be obtained or failed verification."""


@dataclass(frozen=True)
class Source:
    """A verified ONNX file on disk and what the manifest says about its origin."""

    path: Path
    sha256: str
    description: dict


def sha256_file(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/isnet-wsgi, else ~/.cache/isnet-wsgi."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "isnet-wsgi"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cached(cache: Path, sha256: str, suffix: str) -> Path | None:
    path = cache / f"{sha256}{suffix}"
    if path.is_file() and sha256_file(path) == sha256:
        return path
    return None


def npm_tarball(cache: Path) -> Path:
    """The package tarball from the cache, or from `npm pack` into it."""
    found = _cached(cache, TARBALL_SHA256, ".tgz")
    if found:
        return found
    with tempfile.TemporaryDirectory(prefix="npm-pack-", dir=cache) as tmp:
        spec = f"{NPM_PACKAGE}@{NPM_VERSION}"
        try:
            result = subprocess.run(
                ["npm", "pack", spec, "--silent"], cwd=tmp, check=True, capture_output=True, text=True
            )
        except (OSError, subprocess.CalledProcessError) as error:
            detail = getattr(error, "stderr", "") or str(error)
            raise SourceError(f"`npm pack {spec}` failed (or use --from PATH): {detail.strip()}") from error
        packed = Path(tmp) / result.stdout.strip().splitlines()[-1]
        actual = sha256_file(packed)
        if actual != TARBALL_SHA256:
            raise SourceError(f"{packed.name}: sha256 {actual}, expected {TARBALL_SHA256}")
        target = cache / f"{TARBALL_SHA256}.tgz"
        os.replace(packed, target)
        return target


def _read_members(archive: tarfile.TarFile, names: list[str]) -> dict[str, bytes]:
    """Read the named files, in archive order: a .tgz only streams forwards,
    and every backward seek would decompress the 136 MB again from the start."""
    members = {member.name: member for member in archive.getmembers()}
    missing = [name for name in names if name not in members]
    if missing:
        raise SourceError(f"package has no file {missing[0]}")
    contents = {}
    for name in sorted(names, key=lambda n: members[n].offset_data):
        stream = archive.extractfile(members[name])
        if stream is None:
            raise SourceError(f"package entry {name} is not a file")
        contents[name] = stream.read()
    return contents


def reassemble(resources: dict, read_chunk, resource: str = NPM_RESOURCE) -> bytes:
    """Join a resource's chunks in offset order, verifying each chunk's sha256,
    that the chunks tile [0, size) without gaps, and the total size.
    `read_chunk(hash)` returns the bytes of package/dist/<hash>."""
    entry = resources.get(resource)
    if entry is None:
        raise SourceError(f"resources.json has no {resource}")
    parts, position = [], 0
    for chunk in sorted(entry["chunks"], key=lambda c: c["offsets"][0]):
        start, end = chunk["offsets"]
        data = read_chunk(chunk["hash"])
        if hashlib.sha256(data).hexdigest() != chunk["hash"]:
            raise SourceError(f"chunk {chunk['hash']} of {resource} fails its sha256")
        if start != position or end - start != len(data):
            raise SourceError(f"chunk {chunk['hash']} has offsets {start}-{end}, expected to start at {position}")
        parts.append(data)
        position = end
    if position != entry["size"]:
        raise SourceError(f"{resource} reassembled to {position} bytes, expected {entry['size']}")
    return b"".join(parts)


def npm_model(cache: Path) -> Source:
    """The fp16 ISNet from the npm package, reassembled and cached."""
    description = {
        "kind": "npm",
        "package": NPM_PACKAGE,
        "version": NPM_VERSION,
        "resource": NPM_RESOURCE,
        "tarball_sha256": TARBALL_SHA256,
        "model_sha256": MODEL_SHA256,
        "model_size_bytes": MODEL_SIZE_BYTES,
        "precision": "fp16",
    }
    found = _cached(cache, MODEL_SHA256, ".onnx")
    if found:
        return Source(found, MODEL_SHA256, description)
    with tarfile.open(npm_tarball(cache), "r:gz") as archive:
        index = "package/dist/resources.json"
        resources = json.loads(_read_members(archive, [index])[index])
        chunks = resources.get(NPM_RESOURCE, {}).get("chunks", [])
        files = _read_members(archive, [f"package/dist/{chunk['hash']}" for chunk in chunks])
    data = reassemble(resources, lambda name: files[f"package/dist/{name}"])
    actual = hashlib.sha256(data).hexdigest()
    if actual != MODEL_SHA256:
        raise SourceError(f"reassembled model has sha256 {actual}, expected {MODEL_SHA256}")
    target = cache / f"{MODEL_SHA256}.onnx"
    _write_atomic(target, data)
    return Source(target, MODEL_SHA256, description)


def user_model(path: Path) -> Source:
    """A user-supplied ISNet ONNX file (fp16 or fp32), used in place."""
    if not path.is_file():
        raise SourceError(f"--from {path}: no such file")
    sha256 = sha256_file(path)
    return Source(path, sha256, {"kind": "file", "name": path.name, "model_sha256": sha256,
                                 "model_size_bytes": path.stat().st_size})


def _write_atomic(target: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as stream:
        stream.write(data)
    publish(Path(stream.name), target)


def copy_atomic(source: Path, target: Path) -> None:
    """Copy so that `target` is either absent, the old file, or the whole new one."""
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as stream:
        with open(source, "rb") as original:
            shutil.copyfileobj(original, stream)
    publish(Path(stream.name), target)


def publish(part: Path, target: Path) -> None:
    """Move a finished temporary file into place, readable by all (the server
    may run as another user; temporary files start out private)."""
    part.chmod(0o644)
    os.replace(part, target)
