"""The site's CA and the host certificates (roles/mlstack/tasks/pki.yml), made on the control node
by a real ansible-playbook run: private keys 0600 in a 0700 folder, each host's certificate signed
by the CA for its names and the loopback, and a second run changes nothing."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from deploy_support import REPO, ansible_bin_dir, run

HOSTS = {"mq1": "192.0.2.21", "app1": "app1.example.net", "mq2.example.net": "192.0.2.22"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("pki")
    inventory = tmp / "hosts.yml"
    inventory.write_text(
        "all:\n  hosts:\n" + "".join(f"    {name}: {{mlstack_address: {address}}}\n" for name, address in HOSTS.items())
    )
    playbook = tmp / "pki.yml"
    playbook.write_text(
        f"""- hosts: all
  gather_facts: false
  connection: local
  vars_files: [{REPO}/roles/mlstack/defaults/main.yml]
  vars:
    mlstack_pki_dir: {tmp}/pki
  tasks:
    - ansible.builtin.include_tasks: {REPO}/roles/mlstack/tasks/pki.yml
"""
    )
    outputs = []
    for _ in range(2):
        result = run([str(ansible_bin_dir() / "ansible-playbook"), "-i", str(inventory), str(playbook)])
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        outputs.append(result.stdout)
    return tmp / "pki", outputs


def _openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


def test_second_run_changes_nothing(pki: tuple[Path, list[str]]) -> None:
    first, second = pki[1]
    assert re.search(r"changed=[1-9]", first), first[-2000:]
    assert all(int(n) == 0 for n in re.findall(r"changed=(\d+)", second)), second[-2000:]


def test_keys_are_private_to_the_control_node_user(pki: tuple[Path, list[str]]) -> None:
    root = pki[0]
    assert root.stat().st_mode & 0o777 == 0o700
    keys = [root / "ca.key", *(root / "hosts" / f"{name}.key" for name in HOSTS)]
    assert [key.stat().st_mode & 0o777 for key in keys] == [0o600] * len(keys)


def test_each_host_certificate_is_signed_by_the_ca_for_its_names(pki: tuple[Path, list[str]]) -> None:
    root = pki[0]
    for name, address in HOSTS.items():
        cert = str(root / "hosts" / f"{name}.crt")
        assert _openssl("verify", "-CAfile", str(root / "ca.crt"), cert).strip().endswith("OK")
        san = _openssl("x509", "-noout", "-ext", "subjectAltName", "-in", cert)
        kind = "IP Address" if address[0].isdigit() else "DNS"
        # The short name too: a RabbitMQ node (rabbit@<short name>) is checked by it on the TLS distribution.
        short = f"DNS:{name.split('.')[0]}"
        for entry in (f"DNS:{name}", short, f"{kind}:{address}", "IP Address:127.0.0.1", "DNS:localhost"):
            assert entry in san, san
    other = _openssl("x509", "-noout", "-ext", "subjectAltName", "-in", str(root / "hosts/app1.crt"))
    assert "192.0.2.21" not in other  # one host's certificate does not serve as another's
