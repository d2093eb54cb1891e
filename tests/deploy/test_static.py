"""Static checks of the Ansible deployment: lint (production profile), syntax, role docs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_support import REPO, ansible_bin_dir, run

PLAYBOOKS = ["site.yml", *sorted(str(p.relative_to(REPO)) for p in (REPO / "playbooks").glob("*.yml"))]
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir())


def test_ansible_lint_production_profile() -> None:
    result = run([str(ansible_bin_dir() / "ansible-lint"), "-c", "tests/deploy/ansible-lint.yml"], timeout=900)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    assert "Profile 'production' was required, and it passed" in out, out[-3000:]


def test_the_shared_broker_user_is_removed_only_after_the_api_and_worker_plays() -> None:
    """Removing it closes its connections: on an upgrade, API and workers must already have been
    restarted with users of their own, or they would be cut off the broker until then."""
    order: list[tuple[str, set[str]]] = []  # (playbook, roles and task files its plays use), in site.yml order
    for entry in yaml.safe_load((REPO / "site.yml").read_text()):
        playbook = entry["ansible.builtin.import_playbook"]
        text = (REPO / playbook).read_text()
        used = {r if isinstance(r, str) else r["role"] for play in yaml.safe_load(text) for r in play.get("roles", [])}
        used |= {"retire_users.yml"} if "retire_users.yml" in text else set()
        order.append((playbook, used))
    position = {name: i for i, (_, used) in enumerate(order) for name in used}
    assert position["retire_users.yml"] > max(position["api"], position["worker_pub"]), order
    removing = [p.name for p in (REPO / "roles").glob("*/tasks/*.yml") if "rabbitmq_removed_users" in p.read_text()]
    assert removing == ["retire_users.yml"], removing


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_syntax_check(playbook: str) -> None:
    for inventory in ("inventory/hosts.yml", "inventory/example-multihost.yml"):
        result = run([str(ansible_bin_dir() / "ansible-playbook"), "--syntax-check", "-i", inventory, playbook])
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.parametrize("role", ROLES)
def test_every_role_option_is_documented(role: str) -> None:
    """meta/argument_specs.yml lists every variable of defaults/main.yml, with a description."""
    path = REPO / "roles" / role
    defaults = yaml.safe_load((path / "defaults/main.yml").read_text()) or {}
    specs = yaml.safe_load((path / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert sorted(set(defaults) - set(specs)) == []
    for name in defaults:
        assert name.startswith(role + "_"), f"{role}: {name} lacks the role prefix"
        assert specs[name].get("description"), f"{role}: {name} has no description"


def test_service_roles_take_an_external_service_and_local_files() -> None:
    group_vars = yaml.safe_load((REPO / "inventory/group_vars/all/main.yml").read_text())
    for role in ("mongodb", "rabbitmq", "minio", "mlflow"):
        assert group_vars[f"{role}_install"] is True
        assert any(k.startswith(f"{role}_external_") for k in group_vars), role
        defaults = yaml.safe_load((REPO / "roles" / role / "defaults/main.yml").read_text())
        assert any(k.endswith(("_package_src", "_binary_src")) for k in defaults), role


def test_credentials_file_is_git_ignored() -> None:
    result = subprocess.run(
        ["git", "check-ignore", "-q", "credentials/mlstack.yml"], cwd=REPO, capture_output=True, check=False
    )
    assert result.returncode == 0, ".gitignore must ignore /credentials/"


def test_requirements_deploy_pins_the_tools() -> None:
    lines = [x for x in (REPO / "requirements-deploy.txt").read_text().splitlines() if x and not x.startswith("#")]
    names = {line.split("==")[0] for line in lines}
    assert {"ansible", "ansible-lint"} <= names
    assert "docker-systemctl-replacement" not in names  # units run under a real systemd (bin/test-hosts)
    assert all("==" in line for line in lines)


def _unit_templates() -> list[Path]:
    return sorted((REPO / "systemd").glob("*.j2"))


def test_units_are_templates_in_systemd_dir() -> None:
    names = {p.name for p in _unit_templates()}
    for unit in (
        "mlstack-api.service",
        "mlstack-worker-pub@.service",
        "mlstack-retrain@.service",
        "mlstack-retrain@.timer",
        "mlstack-train.service",
        "mlstack-health.service",
        "mlstack-health.timer",
        "minio.service",
        "mlflow.service",
    ):
        assert unit + ".j2" in names
