"""Expanding ``upload`` arguments: files as given, folders walked into (file, folder) pairs.

A folder argument ``seizure-17/`` yields each regular file below it with its
folder relative to the argument's parent (``seizure-17/phone/DCIM``), which
goes sealed into the manifest so ``pull`` recreates the tree. Symbolic links
are refused unless followed on request (a link could pull in files from
outside the folder, or loop); include/exclude patterns are shell globs
matched against the relative path (``phone/DCIM/a.jpg``) and the base name.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from exchange.cli._ui import CliError, ExitCode
from exchange.crypto.manifest import UnsafeFileName, safe_file_name, safe_folder

__all__ = ["UploadItem", "expand"]


@dataclass(frozen=True, slots=True)
class UploadItem:
    """One file to upload and the relative folder to record for it ("" = none)."""

    path: Path
    folder: str

    @property
    def display(self) -> str:
        """The relative name shown to the user (``folder/name``)."""
        return f"{self.folder}/{self.path.name}" if self.folder else self.path.name


def _matches(relative: str, patterns: Sequence[str]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(relative, p) or fnmatch.fnmatchcase(name, p)
               for p in patterns)


def _walk(top: Path, *, follow_symlinks: bool, include: Sequence[str],
          exclude: Sequence[str]) -> list[UploadItem]:
    root_name = top.resolve().name
    items: list[UploadItem] = []
    seen: set[tuple[int, int]] = set()
    for current, dirs, files in os.walk(top, followlinks=follow_symlinks):
        here = Path(current)
        info = here.stat()
        if (info.st_dev, info.st_ino) in seen:  # a followed link looping back
            raise CliError(f"folder {str(here)!r} is reached twice (a symlink loop)")
        seen.add((info.st_dev, info.st_ino))
        relative_dir = here.relative_to(top).as_posix()
        folder = root_name if relative_dir == "." else f"{root_name}/{relative_dir}"
        dirs.sort()
        for name in sorted(files) + [d for d in dirs if (here / d).is_symlink()]:
            path = here / name
            if path.is_symlink() and not follow_symlinks:
                raise CliError(f"{str(path)!r} is a symbolic link",
                               "pass --follow-symlinks to upload what it points to, or "
                               "remove it", code=ExitCode.USAGE)
            if name in dirs:
                continue  # a followed directory link: walked by os.walk itself
            relative = f"{folder}/{name}"[len(root_name) + 1:]
            if include and not _matches(relative, include):
                continue
            if exclude and _matches(relative, exclude):
                continue
            if not path.is_file():
                raise CliError(f"{str(path)!r} is not a regular file (device, fifo or socket)",
                               "exclude it with --exclude", code=ExitCode.USAGE)
            try:
                safe_file_name(name)
                safe_folder(folder)
            except UnsafeFileName as err:
                raise CliError(f"cannot keep the name of {str(path)!r}: {err}",
                               code=ExitCode.USAGE) from None
            items.append(UploadItem(path, folder))
    return items


def expand(arguments: Sequence[Path], *, follow_symlinks: bool = False,
           include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[UploadItem]:
    """Return the files to upload for ``arguments``, folders walked recursively, in order.

    Every name is checked before anything is uploaded; raises :class:`CliError`
    for a missing path, a refused symlink, a special file or an unsafe name.
    """
    items: list[UploadItem] = []
    for argument in arguments:
        if argument.is_symlink() and not follow_symlinks and argument.is_dir():
            raise CliError(f"{str(argument)!r} is a symbolic link to a folder",
                           "pass --follow-symlinks to upload it", code=ExitCode.USAGE)
        if argument.is_dir():
            found = _walk(argument, follow_symlinks=follow_symlinks, include=include,
                          exclude=exclude)
            if not found:
                raise CliError(f"folder {str(argument)!r} has no file to upload",
                               code=ExitCode.USAGE)
            items.extend(found)
        elif argument.is_file():
            items.append(UploadItem(argument, ""))
        else:
            raise CliError(f"{str(argument)!r} is not a file or folder", code=ExitCode.USAGE)
    return items
