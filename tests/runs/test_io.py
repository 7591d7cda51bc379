import pytest

from bnnopt.runs.io import atomic_path, read_jsonl, write_json, write_jsonl


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    write_json(target, {"b": 2})
    assert target.read_text().strip().startswith("{") and '"b": 2' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_jsonl_round_trip(tmp_path):
    rows = [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]
    write_jsonl(tmp_path / "m.jsonl", rows)
    assert read_jsonl(tmp_path / "m.jsonl") == rows
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_written_files_respect_the_umask(tmp_path):
    import os

    from bnnopt.runs.io import current_umask, save_torch, write_json

    old = os.umask(0o022)
    try:
        assert current_umask() == 0o022
        write_json(tmp_path / "a.json", {"x": 1})
        save_torch(tmp_path / "b.pt", {"x": 1})
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "b.pt").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        write_json(tmp_path / "c.json", {"x": 1})
        assert (tmp_path / "c.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_orphan_temporary_files_are_removed(tmp_path):
    from bnnopt.runs.io import remove_orphan_temps

    orphans = [".checkpoint.pt.a1b2c3d4.tmp", ".metrics.jsonl.zz_9xk2q.tmp"]
    keep = ["checkpoint.pt", "notes.tmp", ".lock", "x.tmp.txt"]
    for name in orphans + keep:
        (tmp_path / name).write_bytes(b"x")
    removed = remove_orphan_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted(orphans)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_jsonl_refuses_non_finite_values(tmp_path):
    import pytest

    from bnnopt.runs.io import write_jsonl

    with pytest.raises(ValueError, match=r"non-finite values \['loss'\]"):
        write_jsonl(tmp_path / "m.jsonl", [{"loss": float("nan"), "acc": 1.0}])
    assert not (tmp_path / "m.jsonl").exists()


def test_check_output_dir(tmp_path):
    import pytest

    from bnnopt.runs.io import check_output_dir

    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is an existing file, not a directory"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(ValueError, match="f is a file, not a directory"):
        check_output_dir(tmp_path / "f" / "a" / "b")
    assert check_output_dir(tmp_path / "new" / "deep") == tmp_path / "new" / "deep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # nothing created

