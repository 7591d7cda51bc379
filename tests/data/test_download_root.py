import tarfile
from pathlib import Path

import pytest

from bnnopt.data import (
    SOURCES,
    DataError,
    Resource,
    Source,
    _download,
    download,
    md5sum,
    read_cifar10,
    read_mnist,
    resolve_data_root,
)


def test_resolve_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_root() == tmp_path / "home" / ".cache" / "bnnopt"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_root() == tmp_path / "xdg" / "bnnopt"
    monkeypatch.setenv("BNNOPT_DATA", str(tmp_path / "env"))
    assert resolve_data_root() == tmp_path / "env"
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_root("~/x") == tmp_path / "home" / "x"
    assert not (tmp_path / "env").exists()  # resolving creates nothing


def test_official_table_is_complete():
    assert set(SOURCES) == {"cifar10", "cifar100", "mnist", "fashion_mnist", "svhn"}
    for src in SOURCES.values():
        for r in src.resources:
            assert len(r.md5) == 32 and int(r.md5, 16) >= 0
            assert r.urls and all(u.startswith(("http://", "https://")) and u.endswith(r.filename) for u in r.urls)


def _mnist_sources(folder: Path, mirrors: list[str]) -> dict:
    files = sorted(p.name for p in folder.iterdir())
    return {"mnist": Source("mnist", tuple(
        Resource(f, md5sum(folder / f), tuple(m + f for m in mirrors)) for f in files))}


def test_download_mnist_from_file_urls_with_fallback(tmp_path, fmt):
    fmt.mnist(tmp_path / "mirror", n_train=4, n_test=2)
    mirrors = [(tmp_path / "dead").as_uri() + "/", (tmp_path / "mirror").as_uri() + "/"]
    table = _mnist_sources(tmp_path / "mirror", mirrors)
    root = tmp_path / "root"
    folder = download("mnist", root, sources=table, quiet=True)
    assert folder == root / "mnist" and len(list(folder.iterdir())) == 4
    assert read_mnist(root).train_x.shape[0] == 4
    # second call keeps verified files (the mirror can vanish)
    for f in (tmp_path / "mirror").iterdir():
        f.unlink()
    download("mnist", root, sources=table, quiet=True)


def test_checksum_mismatch_leaves_nothing(tmp_path, fmt):
    fmt.mnist(tmp_path / "mirror")
    table = _mnist_sources(tmp_path / "mirror", [(tmp_path / "mirror").as_uri() + "/"])
    r0 = table["mnist"].resources[0]
    bad = {"mnist": Source("mnist", (Resource(r0.filename, "0" * 32, r0.urls),))}
    with pytest.raises(DataError, match=f"checksum mismatch for {r0.filename}.*expected 0{{32}}"):
        download("mnist", tmp_path / "root", sources=bad, quiet=True)
    assert not (tmp_path / "root").exists()  # no empty directory left behind either


def test_offline_is_a_clear_error(tmp_path):
    table = {"mnist": Source("mnist", (Resource("x.gz", "0" * 32, ((tmp_path / "gone").as_uri() + "/x.gz",)),))}
    with pytest.raises(DataError, match=r"could not download x.gz \(offline\?\).*place the file at"):
        download("mnist", tmp_path / "root", sources=table, quiet=True)
    assert not (tmp_path / "root").exists()  # a failed download leaves no empty directory


def test_failed_download_keeps_existing_root(tmp_path):
    (tmp_path / "root").mkdir()
    table = {"mnist": Source("mnist", (Resource("x.gz", "0" * 32, ((tmp_path / "gone").as_uri() + "/x.gz",)),))}
    with pytest.raises(DataError):
        download("mnist", tmp_path / "root", sources=table, quiet=True)
    assert (tmp_path / "root").is_dir() and list((tmp_path / "root").iterdir()) == []


def test_cifar_download_extracts_and_reader_uses_it(tmp_path, fmt, monkeypatch):
    fmt.cifar10(tmp_path / "src", n_per_batch=2, n_test=1)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    table = {"cifar10": Source("cifar-10-batches-py", (
        Resource(archive.name, md5sum(archive), (archive.as_uri(),), extract=True),))}
    monkeypatch.setattr(_download, "SOURCES", table)
    root = tmp_path / "root"
    with pytest.raises(DataError, match="--download"):
        read_cifar10(root)
    ds = read_cifar10(root, download=True)
    assert ds.train_x.shape[0] == 10 and (root / "cifar-10-python.tar.gz").is_file()


def test_tar_path_traversal_refused(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    payload = tmp_path / "payload"
    payload.write_text("x")
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(payload, arcname="../escaped")
    table = {"cifar10": Source("cifar-10-batches-py", (Resource(evil.name, md5sum(evil), (evil.as_uri(),), True),))}
    with pytest.raises(DataError, match="escapes"):
        download("cifar10", tmp_path / "root", sources=table, quiet=True)
    assert not (tmp_path / "escaped").exists()


def test_not_downloadable_and_unknown(tmp_path):
    with pytest.raises(DataError, match="image-net.org"):
        download("imagenet", tmp_path)
    assert download("digits", tmp_path) == tmp_path
    with pytest.raises(ValueError, match="unknown dataset 'cifar11'.*cifar10"):
        download("cifar11", tmp_path)
