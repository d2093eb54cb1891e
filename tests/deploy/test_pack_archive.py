"""roles/mlstack/files/pack-archive, which packs the wheelhouse and the Debian packages on the control node:
the same folder gives the same bytes (so Ansible's copy sends nothing on a second run), and runs
that pack at the same time each leave a whole archive and no temporary file behind."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from deploy_support import REPO

PACK = REPO / "roles/mlstack/files/pack-archive"


def _folder(tmp: Path) -> Path:
    folder = tmp / "wheels"
    folder.mkdir()
    for n in range(40):
        (folder / f"pkg{n}-1.0-py3-none-any.whl").write_bytes(os.urandom(64 * 1024))
    return folder


def _pack(archive: Path, folder: Path) -> None:
    subprocess.run([str(PACK), str(archive), str(folder)], check=True)


def test_the_same_folder_gives_the_same_bytes(tmp_path: Path) -> None:
    folder, archive = _folder(tmp_path), tmp_path / "a.tar"
    _pack(archive, folder)
    first = hashlib.sha256(archive.read_bytes()).hexdigest()
    for path in folder.iterdir():
        os.utime(path, (1_000_000, 1_000_000))  # new times, same content
    _pack(archive, folder)
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == first
    assert archive.stat().st_mode & 0o777 == 0o644


def test_concurrent_runs_leave_one_whole_archive(tmp_path: Path) -> None:
    folder, archive = _folder(tmp_path), tmp_path / "a.tar"
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: _pack(archive, folder), range(12)))
    with tarfile.open(archive) as tar:
        names = sorted(n for n in tar.getnames() if n.endswith(".whl"))
    assert names == sorted(f"./{p.name}" for p in folder.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "wheels"]
