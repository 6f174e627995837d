"""`drill restore` argument handling and a file restore through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from drills.restore.cli import main
from drills.restore.format import cinder_prefix, write_backup
from drills.restore.store import PosixBackupStore


def test_restore_through_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    volume = bytes(range(256)) * 8192  # 2 MiB
    store = PosixBackupStore(tmp_path / "c")
    prefix = cinder_prefix("v", "b")
    write_backup(volume, store, prefix, 1 << 20, "zstd")
    out = tmp_path / "out.img"
    rc = main(["restore", str(store.root / f"{prefix}_metadata"), str(out), "--memory-budget", "32MiB", "--plain"])
    assert rc == 0 and out.read_bytes() == volume
    assert "peak reserved" in capsys.readouterr().out
    assert main(["restore", str(store.root / prefix), str(out), "--plain"]) == 1  # exists, no --force
    assert main(["restore", str(store.root / prefix), str(out), "--plain", "--force"]) == 0


@pytest.mark.parametrize("argv", [
    ["restore", "/nonexistent/dir/prefix", "out.img"],
    ["restore", "only-one-argument"],
    ["restore", "--chain", "only-a-destination"],
    ["restore", "--backup-tree", "/nonexistent/tree", "/nonexistent/dir/prefix", "out.img"],
    ["restore", "--resume", "/nonexistent/dir/prefix", "rbd:img"],
])
def test_bad_input_exits_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("drill restore:") and "\n" not in err
