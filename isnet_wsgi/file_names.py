"""File names from clients: the stem and extension of a name written on any OS."""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath


def split_file_name(filename: str) -> tuple[str, str]:
    """(stem, lower-case extension without the dot) of a file name from any OS.

    Folders are dropped whether the client wrote them with / or \\ (or a
    Windows drive); a name with no stem is "image", one with no suffix has "".
    """
    name = PurePosixPath(PureWindowsPath(PurePosixPath(filename).name).name)
    return name.stem or "image", name.suffix.lower().lstrip(".")
