"""The official files of a real data set under `data.root`: found there, or fetched when asked.

Every real data set (cifar10, cifar100, svhn, mnist, fashion_mnist, kmnist) describes its files as
an `Official` table beside its reader: the paths it reads under `root`, and the published
downloads (URL and MD5, as torchvision lists them) that give them. `ensure` runs before training:

- every file present (a gzipped one also counts unpacked, without .gz): nothing else happens (a
  user's own copy is read as it is, unverified);
- some missing and `download: false` (the default): one line naming the files expected under
  `root` and `data.download=true`; nothing is ever downloaded unless asked;
- `download: true`: each download whose file is missing (or differs from it) is fetched from its URL (urllib), its MD5
  checked against the published one (a mismatch is refused and the file removed), and an archive
  unpacked into `root`, refusing any member that would land outside it (absolute paths, `..`,
  links, devices).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from reglab.errors import ConfigError

CHUNK = 1 << 20  # bytes read at a time while downloading and hashing
TIMEOUT_S = 60  # seconds without an answer before a download is given up


@dataclass(frozen=True)
class Download:
    """One published file: its URL, the MD5 published for it, and whether it is a tar archive."""

    url: str
    md5: str
    unpack: bool = False

    @property
    def filename(self) -> str:
        """The name it is saved under in `root`: the URL's last part."""
        return PurePosixPath(self.url).name


@dataclass(frozen=True)
class Official:
    """What a data set reads under `root` (`files`, relative paths) and the downloads giving them."""

    name: str
    files: tuple[str, ...]
    downloads: tuple[Download, ...]


def folder(value: Any) -> Path:
    """`root` as a Path (`~` expanded): a non-empty string is required."""
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int, os.PathLike)):
        raise ConfigError("root", f"set it to the folder holding the files, got {value!r}")
    if str(value) == "":
        raise ConfigError("root", "set it to the folder holding the files, got ''")
    return Path(str(value)).expanduser()


def ensure(root: Path, official: Official, download: bool) -> None:
    """Make sure every file of `official` is under `root` (see the module docstring)."""
    if not _missing(root, official.files):
        return
    if not download:
        raise ConfigError(
            "root",
            f"{official.name} expects {', '.join(official.files)} under {str(root)!r}: put the "
            "files there, or set data.download=true to fetch them from "
            f"{', '.join(sorted({_site(d.url) for d in official.downloads}))}",
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError("root", f"{str(root)!r} cannot be made ({error})") from None
    for item in official.downloads:
        target = root / item.filename
        if not target.is_file() or md5(target) != item.md5:
            fetch(item, target)
        if item.unpack:
            unpack(target, root)
    missing = _missing(root, official.files)
    if missing:
        raise ConfigError(
            "root",
            f"the downloads left {', '.join(missing)} missing under {str(root)!r}: "
            f"not the {official.name} distribution",
        )


def fetch(item: Download, target: Path) -> None:
    """Download `item` to `target` and check its MD5; a failure leaves no file behind."""
    partial = target.with_name(target.name + ".part")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(item.url, timeout=TIMEOUT_S) as answer, partial.open("wb") as f:
            for chunk in iter(lambda: answer.read(CHUNK), b""):
                digest.update(chunk)
                f.write(chunk)
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        reason = getattr(error, "reason", None) or error
        raise ConfigError("download", f"{item.url} could not be fetched ({reason})") from None
    if digest.hexdigest() != item.md5:
        partial.unlink()
        raise ConfigError(
            "download",
            f"{item.url}: MD5 {digest.hexdigest()} is not the published {item.md5}; "
            "the file was refused and removed",
        )
    partial.replace(target)


def unpack(archive: Path, root: Path) -> None:
    """Extract the tar `archive` into `root`, refusing members that would land outside it."""
    inside = root.resolve()
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, inside, archive.name)
            tar.extractall(inside, members=members, **_DATA_FILTER)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise ConfigError(
            "root",
            f"{archive.name}: truncated or damaged archive ({error}); delete it and download again",
        ) from None


def _check_member(member: tarfile.TarInfo, inside: Path, name: str) -> None:
    if not (member.isfile() or member.isdir()):
        raise ConfigError("root", f"{name}: refused member {member.name!r} (not a file or folder)")
    where = (inside / member.name).resolve()
    if PurePosixPath(member.name).is_absolute() or not where.is_relative_to(inside):
        raise ConfigError("root", f"{name}: refused member {member.name!r} (outside the folder)")


# Python's own check of the same (3.10.12+, 3.11.4+): used where the running Python has it.
_DATA_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def md5(path: Path) -> str:
    """The MD5 of the file at `path`, as published checksums give it (hex)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _missing(root: Path, files: tuple[str, ...]) -> list[str]:
    """The `files` not under `root`; a `.gz` file may be there unpacked (its name without .gz)."""
    return [
        name
        for name in files
        if not (root / name).is_file() and not (root / name.removesuffix(".gz")).is_file()
    ]


def _site(url: str) -> str:
    """The scheme and host of `url`: where the files come from, in one short word."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"
