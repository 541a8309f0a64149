"""Tiny files in the official formats of the real data sets, and a file server on loopback.

Images are random bytes; labels cycle through the classes, so every class is present in each
file and a stratified validation split can be drawn from a few dozen images.
"""

from __future__ import annotations

import functools
import http.server
import io
import pickle
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from test_bad_data import idx_bytes


def images(n: int, seed: int, shape: tuple[int, ...] = (3, 32, 32)) -> np.ndarray:
    """n random uint8 images of `shape`."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def cycling(n: int, classes: int, offset: int = 0) -> list[int]:
    """Labels 0..classes-1 in turn, starting at `offset`."""
    return [(i + offset) % classes for i in range(n)]


def cifar_batch(data: np.ndarray, labels: dict[bytes, list[int]]) -> bytes:
    """One pickle batch as the official files hold it (protocol 2, bytes keys)."""
    batch = {b"batch_label": b"fabricated", b"data": data.reshape(len(data), -1), **labels}
    batch[b"filenames"] = [b"x.png"] * len(data)
    return pickle.dumps(batch, protocol=2)


def write_cifar10(root: Path, per_batch: int = 8) -> Path:
    """cifar-10-batches-py/data_batch_1..5 (per_batch images each) and test_batch (10) under root."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        raw = cifar_batch(images(per_batch, i), {b"labels": cycling(per_batch, 10, i)})
        (folder / f"data_batch_{i}").write_bytes(raw)
    (folder / "test_batch").write_bytes(cifar_batch(images(10, 0), {b"labels": cycling(10, 10)}))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c"] * 10}, protocol=2))
    return root


def write_cifar100(root: Path, n_train: int = 400, n_test: int = 100) -> Path:
    """cifar-100-python/train and test under root: fine labels cycle 0..99, coarse = fine // 5."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        fine = cycling(n, 100)
        labels = {b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine]}
        (folder / name).write_bytes(cifar_batch(images(n, seed), labels))
    return root


def svhn_mat(path: Path, n: int, seed: int, labels: np.ndarray | None = None) -> None:
    """An SVHN .mat file: X uint8 [32, 32, 3, n], y [n, 1] in 1..10 (10 is the digit 0)."""
    import scipy.io

    x = images(n, seed).transpose(2, 3, 1, 0)  # (N, C, H, W) -> [H, W, C, N]
    y = np.array([(i % 10) or 10 for i in range(n)], dtype=np.uint8) if labels is None else labels
    scipy.io.savemat(path, {"X": x, "y": y.reshape(-1, 1)})


def write_svhn(root: Path, n_train: int = 40, n_test: int = 10, extra: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    svhn_mat(root / "train_32x32.mat", n_train, 1)
    svhn_mat(root / "test_32x32.mat", n_test, 2)
    if extra:
        svhn_mat(root / "extra_32x32.mat", extra, 3)
    return root


MNIST_FILES = {
    "train-images-idx3-ubyte": ("train", "images"),
    "train-labels-idx1-ubyte": ("train", "labels"),
    "t10k-images-idx3-ubyte": ("test", "images"),
    "t10k-labels-idx1-ubyte": ("test", "labels"),
}


def mnist_files(n_train: int = 40, n_test: int = 10, side: int = 28) -> dict[str, bytes]:
    """The four official IDX files (unpacked names) of a tiny MNIST-like set."""
    arrays = {
        ("train", "images"): images(n_train, 1, (side, side)),
        ("train", "labels"): np.array(cycling(n_train, 10), dtype=np.uint8),
        ("test", "images"): images(n_test, 2, (side, side)),
        ("test", "labels"): np.array(cycling(n_test, 10), dtype=np.uint8),
    }
    return {name: idx_bytes(arrays[part]) for name, part in MNIST_FILES.items()}


def tar_gz(folder: Path, members: dict[str, bytes] | None = None) -> bytes:
    """A .tar.gz of every file under `folder` (names relative to it), plus raw `members`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
        for name, raw in (members or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buffer.getvalue()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # noqa: ANN002 (no request log in test output)
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving `folder`; yields its base URL."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # A short poll: shutdown() waits for the loop's next look (0.5 s by default) in every test.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
