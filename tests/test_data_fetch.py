"""data.download=true: the official files fetched from their URL, MD5-checked, unpacked safely.

The downloader is pointed at an HTTP server on loopback serving fabricated archives (no network):
a good archive is fetched and unpacked and trains; a checksum mismatch, a truncated archive and
members that would land outside data.root are refused with one error and leave nothing behind;
nothing is fetched unless asked, or when the files are already there.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import socket

import pytest

from real_data_support import mnist_files, serve, tar_gz, write_cifar10
from reglab.data import Cifar10DataModule, MnistFamilyDataModule
from reglab.data import fetch as fetch_module
from reglab.data.cifar import CIFAR10
from reglab.data.fetch import Download
from reglab.data.mnist import OFFICIAL
from reglab.errors import ConfigError

ARCHIVE = "cifar-10-python.tar.gz"


def md5(raw: bytes) -> str:
    return hashlib.md5(raw, usedforsecurity=False).hexdigest()


@pytest.fixture
def served(tmp_path):
    """A served folder holding a fabricated CIFAR-10 archive; yields (folder, base URL)."""
    folder = tmp_path / "server"
    folder.mkdir()
    source = write_cifar10(tmp_path / "source")
    (folder / ARCHIVE).write_bytes(tar_gz(source))
    with serve(folder) as url:
        yield folder, url


def point_cifar10_at(monkeypatch, url: str, checksum: str) -> None:
    """Cifar10DataModule downloads `url` and expects `checksum` (the published values otherwise)."""
    official = dataclasses.replace(CIFAR10, downloads=(Download(url, checksum, unpack=True),))
    monkeypatch.setattr(Cifar10DataModule, "official", official)


def test_download_fetches_checks_and_unpacks_the_archive(tmp_path, served, monkeypatch):
    folder, url = served
    point_cifar10_at(monkeypatch, f"{url}/{ARCHIVE}", md5((folder / ARCHIVE).read_bytes()))
    root = tmp_path / "new" / "cifar"  # made by the download
    module = Cifar10DataModule(root=str(root), download=True, val_fraction=0.25)
    assert (root / ARCHIVE).read_bytes() == (folder / ARCHIVE).read_bytes()
    assert (root / "cifar-10-batches-py" / "test_batch").is_file()
    assert len(module.splits["test"].x) == 10
    # Present now: a second construction neither downloads nor needs the server.
    point_cifar10_at(monkeypatch, "http://127.0.0.1:9/gone.tar.gz", "0" * 32)
    Cifar10DataModule(root=str(root), download=True)


def test_a_checksum_mismatch_is_refused_and_removed(tmp_path, served, monkeypatch):
    _, url = served
    published = CIFAR10.downloads[0].md5  # the real archive's MD5, not the fabricated one's
    point_cifar10_at(monkeypatch, f"{url}/{ARCHIVE}", published)
    root = tmp_path / "cifar"
    with pytest.raises(ConfigError) as error:
        Cifar10DataModule(root=str(root), download=True)
    assert error.value.key == "download"
    assert f"is not the published {published}" in error.value.message
    assert list(root.iterdir()) == []  # neither the archive nor a partial file nor batches


def test_a_truncated_archive_is_refused(tmp_path, served, monkeypatch):
    folder, url = served
    raw = (folder / ARCHIVE).read_bytes()
    (folder / "short.tar.gz").write_bytes(raw[: len(raw) // 2])
    point_cifar10_at(monkeypatch, f"{url}/short.tar.gz", md5(raw[: len(raw) // 2]))
    with pytest.raises(ConfigError) as error:
        Cifar10DataModule(root=str(tmp_path / "cifar"), download=True)
    assert error.value.key == "root"
    assert error.value.message.startswith("short.tar.gz: truncated or damaged archive")


@pytest.mark.parametrize("member", ["../escaped", "/tmp/reglab-escaped-absolute", "a/../../up"])
def test_members_outside_root_are_refused(tmp_path, served, monkeypatch, member):
    folder, url = served
    source = write_cifar10(tmp_path / "source2")
    raw = tar_gz(source, members={member: b"outside"})
    (folder / "evil.tar.gz").write_bytes(raw)
    point_cifar10_at(monkeypatch, f"{url}/evil.tar.gz", md5(raw))
    root = tmp_path / "deep" / "cifar"
    with pytest.raises(ConfigError) as error:
        Cifar10DataModule(root=str(root), download=True)
    assert error.value.key == "root" and "outside the folder" in error.value.message
    assert not (tmp_path / "deep" / "escaped").exists() and not (tmp_path / "up").exists()
    assert not (root / "cifar-10-batches-py").exists()  # refused before anything is unpacked


def test_a_link_member_is_refused(tmp_path):
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        link = tarfile.TarInfo("cifar-10-batches-py")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        tar.addfile(link)
    (tmp_path / ARCHIVE).write_bytes(buffer.getvalue())
    with pytest.raises(ConfigError, match="not a file or folder"):
        fetch_module.unpack(tmp_path / ARCHIVE, tmp_path)


def test_nothing_is_downloaded_unless_asked(tmp_path, served, monkeypatch):
    folder, url = served
    point_cifar10_at(monkeypatch, f"{url}/{ARCHIVE}", md5((folder / ARCHIVE).read_bytes()))
    with pytest.raises(ConfigError) as error:
        Cifar10DataModule(root=str(tmp_path / "cifar"))
    assert "data.download=true" in error.value.message and "127.0.0.1" in error.value.message
    assert not (tmp_path / "cifar").exists()


def test_an_unreachable_site_is_one_error(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    point_cifar10_at(monkeypatch, f"http://127.0.0.1:{port}/{ARCHIVE}", "0" * 32)
    with pytest.raises(ConfigError) as error:
        Cifar10DataModule(root=str(tmp_path / "cifar"), download=True)
    assert error.value.key == "download" and "could not be fetched" in error.value.message
    assert list((tmp_path / "cifar").iterdir()) == []


def test_plain_files_are_downloaded_as_they_are(tmp_path, monkeypatch):
    folder = tmp_path / "server"
    folder.mkdir()
    downloads = []
    for name, raw in mnist_files().items():
        packed = gzip.compress(raw)
        (folder / f"{name}.gz").write_bytes(packed)
        downloads.append((f"{name}.gz", md5(packed)))
    with serve(folder) as url:
        official = dataclasses.replace(
            OFFICIAL["mnist"], downloads=tuple(Download(f"{url}/{n}", m) for n, m in downloads)
        )
        monkeypatch.setitem(OFFICIAL, "mnist", official)
        module = MnistFamilyDataModule(root=str(tmp_path / "m"), download=True, val_fraction=0.25)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted(n for n, _ in downloads)
    assert len(module.splits["test"].x) == 10
