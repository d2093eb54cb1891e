"""Helpers of the deployment tests: where Ansible is, running playbooks, rendered units."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEFAULT_INVENTORY = REPO / "inventory" / "hosts.yml"
MULTIHOST_INVENTORY = REPO / "inventory" / "example-multihost.yml"
RENDER_PLAYBOOK = REPO / "tests" / "deploy" / "render.yml"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
EXPOSURE = re.compile(r"Overall exposure level for (\S+): ([0-9.]+)")


@dataclass(frozen=True)
class Rendered:
    """Files rendered for every host of an inventory: root/<host>/<path>."""

    root: Path
    credentials: Path
    output: str

    def host(self, name: str) -> Path:
        return self.root / name


def ansible_bin_dir() -> Path:
    """The bin/ of the venv made from requirements-deploy.txt (MLSTACK_DEPLOY_VENV), else PATH."""
    venv = os.environ.get("MLSTACK_DEPLOY_VENV")
    if venv:
        return Path(venv) / "bin"
    found = shutil.which("ansible-playbook")
    if not found:
        pytest.fail("ansible-playbook not found: set MLSTACK_DEPLOY_VENV to a venv made from requirements-deploy.txt")
    return Path(found).parent


def ansible_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{ansible_bin_dir()}:{env.get('PATH', '')}",
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PY_COLORS="0",
    )
    env.update(extra)
    return env


def run(cmd: list[str], timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=REPO, env=env or ansible_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def render(inventory: Path, root: Path, credentials: Path) -> subprocess.CompletedProcess[str]:
    """Renders every file the roles would install on each host into root/<host>/<path>."""
    bin_dir = ansible_bin_dir()
    return run(
        [
            str(bin_dir / "ansible-playbook"),
            "-i",
            str(inventory),
            str(RENDER_PLAYBOOK),
            "-e",
            f"render_root={root}",
            "-e",
            f"mlstack_credentials_file={credentials}",
            # Local templating only: the controller's own interpreter.
            "-e",
            f"ansible_python_interpreter={bin_dir / 'python'}",
        ]
    )


def unit_names(host_root: Path) -> list[str]:
    """Unit files under host_root/etc/systemd/system; templates get an instance name."""
    names = []
    for path in sorted((host_root / "etc/systemd/system").iterdir()):
        if path.is_dir():  # a drop-in folder (<unit>.d) belongs to its unit
            continue
        name = path.name
        names.append(name.replace("@.", "@example_bundle-1.") if "@." in name else name)
    return names


def prepare_verify_root(host_root: Path) -> None:
    """Makes host_root usable with `systemd-analyze --root`: the distribution's units
    (targets the units refer to) and stub executables where ExecStart= etc. point."""
    system = host_root / "usr/lib/systemd/system"
    if not system.exists():
        system.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(SYSTEM_UNITS, system, symlinks=True)
    for unit in (host_root / "etc/systemd/system").iterdir():
        if unit.is_dir():  # drop-ins set no executables
            continue
        for line in unit.read_text().splitlines():
            key, _, value = line.partition("=")
            if key in ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecReload", "ExecStop"):
                exe = value.lstrip("-@:+!").split()[0] if value.strip() else ""
            elif key == "AssertFileIsExecutable":
                exe = value.strip()
            else:
                continue
            if exe.startswith("/"):
                stub = host_root / exe.lstrip("/")
                if not stub.exists():
                    stub.parent.mkdir(parents=True, exist_ok=True)
                    stub.write_text("#!/bin/sh\n")
                    stub.chmod(0o755)


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value.strip('"')
    return values
