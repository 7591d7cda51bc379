"""``--download``: fetch the official dataset files and verify their checksums.

The table :data:`SOURCES` lists, per dataset, the official file names, their MD5
checksums (as published by the dataset authors and used by every major loader) and
the URLs to try in order (official site first, well-known mirrors after). Files are
written to a temporary name and renamed into place only after the checksum matched,
so an interrupted download never leaves a file that looks complete.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bnnopt.data._base import DataError, resolve_data_root

__all__ = ["SOURCES", "Resource", "Source", "download", "download_hint", "md5sum"]


@dataclass(frozen=True)
class Resource:
    """One official file: its name, MD5 and the URLs to try (first that works wins)."""

    filename: str
    md5: str
    urls: tuple[str, ...]
    extract: bool = False  # a .tar.gz to unpack into the dataset's parent folder


@dataclass(frozen=True)
class Source:
    """Where a dataset's files live under the data root and where they come from."""

    folder: str  # sub-folder of the data root the reader looks in first
    resources: tuple[Resource, ...]


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
_SVHN = "http://ufldl.stanford.edu/housenumbers/"


def _idx(mirrors: tuple[str, ...], md5s: dict[str, str]) -> tuple[Resource, ...]:
    return tuple(Resource(f, m, tuple(u + f for u in mirrors)) for f, m in md5s.items())


SOURCES: dict[str, Source] = {
    "cifar10": Source("cifar-10-batches-py", (Resource(
        "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
        ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",), extract=True),)),
    "cifar100": Source("cifar-100-python", (Resource(
        "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
        ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",), extract=True),)),
    "mnist": Source("mnist", _idx(_MNIST_MIRRORS, {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    })),
    "fashion_mnist": Source("fashion_mnist", _idx(_FASHION_MIRRORS, {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    })),
    "svhn": Source("svhn", (
        Resource("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373", (_SVHN + "train_32x32.mat",)),
        Resource("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3", (_SVHN + "test_32x32.mat",)),
    )),
}

_NOT_DOWNLOADABLE = {
    "digits": "digits ships inside scikit-learn; nothing to download",
    "imagenet": ("ImageNet (ILSVRC2012) cannot be downloaded automatically: get it from "
                 "https://image-net.org (registration required) and lay it out as "
                 "imagenet/train/<class>/*.JPEG and imagenet/val/<class>/*.JPEG under the data root"),
}


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex MD5 of a file (integrity check against the published checksums)."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download_hint(name: str, root: Path) -> str:
    """How to get ``name``'s files: the --download flag or where to put them by hand."""
    if name in _NOT_DOWNLOADABLE:
        return _NOT_DOWNLOADABLE[name]
    src = SOURCES[name]
    files = ", ".join(r.filename for r in src.resources)
    url = src.resources[0].urls[0].rsplit("/", 1)[0] + "/"
    if src.resources[0].extract:
        by_hand = f"or extract {files} yourself so that {root / src.folder} exists"
    else:
        by_hand = f"or place them in {root / src.folder} yourself"
    return (f"run with --download to fetch {files} from {url} (checksum verified), {by_hand} "
            f"(choose the root with --data-root or $BNNOPT_DATA)")


def _fetch(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Copy ``url`` (http(s):// or file://) to ``dest``."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)


def _safe_extract(archive: Path, into: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            base = into.resolve()
            for member in tar.getmembers():
                target = (into / member.name).resolve()
                if base != target and base not in target.parents:
                    raise DataError(f"refusing to extract {archive}: member {member.name!r} escapes {into}")
                if not (member.isfile() or member.isdir()):
                    raise DataError(f"refusing to extract {archive}: member {member.name!r} is not a plain file")
            tar.extractall(into)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"cannot extract {archive}: {e}") from e


def download(name: str, root: str | os.PathLike | None = None, *, sources: dict[str, Source] | None = None,
             quiet: bool = False) -> Path:
    """Fetch dataset ``name``'s official files into the data root; returns its folder.

    Files already present with the right MD5 are kept. A wrong checksum deletes the
    fetched copy and raises :class:`DataError`; so does failing every URL (offline).
    ``sources`` overrides :data:`SOURCES` (tests point it at ``file://`` URLs).
    """
    table = SOURCES if sources is None else sources
    if name in _NOT_DOWNLOADABLE and name not in table:
        if name == "digits":
            return resolve_data_root(root)
        raise DataError(_NOT_DOWNLOADABLE[name])
    if name not in table:
        valid = ", ".join(sorted(set(table) | set(_NOT_DOWNLOADABLE)))
        raise ValueError(f"unknown dataset {name!r} for download; valid: {valid}")
    src = table[name]
    base = resolve_data_root(root)
    folder = base / src.folder
    created: list[Path] = []  # directories this call made: removed again if left empty
    try:
        for res in src.resources:
            target_dir = base if res.extract else folder
            _mkdirs(target_dir, created)
            dest = target_dir / res.filename
            if not (dest.is_file() and md5sum(dest) == res.md5):
                _fetch_verified(res, dest, quiet)
            if res.extract:
                if not quiet:
                    print(f"extracting {dest} -> {base}", file=sys.stderr)
                _safe_extract(dest, base)
    except BaseException:
        for d in reversed(created):  # deepest first; only if still empty
            try:
                d.rmdir()
            except OSError:
                pass
        raise
    return folder


def _mkdirs(path: Path, created: list[Path]) -> None:
    """``mkdir -p`` that records each directory it creates (parents first)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        created.append(d)


def _fetch_verified(res: Resource, dest: Path, quiet: bool) -> None:
    tmp = dest.with_name(dest.name + ".part")
    errors = []
    for url in res.urls:
        if not quiet:
            print(f"downloading {url}", file=sys.stderr)
        try:
            _fetch(url, tmp)
        except (urllib.error.URLError, OSError, ValueError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
            tmp.unlink(missing_ok=True)
            continue
        got = md5sum(tmp)
        if got != res.md5:
            tmp.unlink(missing_ok=True)
            raise DataError(f"checksum mismatch for {res.filename} from {url}: md5 {got}, expected {res.md5}")
        os.replace(tmp, dest)
        return
    raise DataError(f"could not download {res.filename} (offline?): " + "; ".join(errors)
                    + f"; place the file at {dest} by hand")
