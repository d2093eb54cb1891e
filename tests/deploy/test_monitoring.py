"""The optional monitoring role (issue 11): lint, syntax, prometheus.yml rendered for both
inventories (three scrape jobs; `promtool check config`), RabbitMQ's Prometheus plugin and the
API's metrics directory, and nothing at all when monitoring is off (the default)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from deploy_support import DEFAULT_INVENTORY, MULTIHOST_INVENTORY, REPO, ansible_bin_dir, env_file, run

MONITORING_PLAYBOOK = "playbooks/monitoring.yml"

# Renders, on the monitoring host of an inventory, the files the roles write when
# monitoring_enabled is true. Connects to no host (like tests/deploy/render.yml).
RENDER = """
- name: Render the monitoring files
  hosts: "{{ 'monitoring' if 'monitoring' in groups else 'api[0]' }}"
  gather_facts: false
  connection: local
  become: false
  vars_files:
    - REPO/roles/mlstack/defaults/main.yml
    - REPO/roles/rabbitmq/defaults/main.yml
    - REPO/roles/api/defaults/main.yml
    - REPO/roles/monitoring/defaults/main.yml
  vars:
    mlstack_credentials_check_hosts: false
    files:
      - {src: roles/monitoring/templates/prometheus.yml.j2, dest: prometheus.yml}
      - {src: roles/rabbitmq/templates/rabbitmq.conf.j2, dest: rabbitmq.conf}
      - {src: roles/api/templates/mlstack.env.j2, dest: mlstack.env}
      - {src: systemd/mlstack-api.service.j2, dest: mlstack-api.service}
  tasks:
    - name: Load or create the credentials
      ansible.builtin.include_role:
        name: mlstack
        tasks_from: credentials.yml
    - name: Render
      ansible.builtin.template:
        src: "REPO/{{ item.src }}"
        dest: "{{ render_root }}/{{ item.dest }}"
        mode: "0600"
      loop: "{{ files }}"
      no_log: true
"""


@dataclass(frozen=True)
class Monitoring:
    root: Path
    config: dict
    output: str


def _render(tmp: Path, inventory: Path) -> Monitoring:
    playbook = tmp / "render-monitoring.yml"
    playbook.write_text(RENDER.replace("REPO/", f"{REPO}/"))
    root = tmp / "out"
    root.mkdir()
    bin_dir = ansible_bin_dir()
    result = run(
        [
            str(bin_dir / "ansible-playbook"),
            "-i",
            str(inventory),
            str(playbook),
            "-e",
            f"render_root={root}",
            "-e",
            f"mlstack_credentials_file={tmp / 'credentials' / 'mlstack.yml'}",
            "-e",
            f"mlstack_source_dir={REPO}",
            # As a site sets it (group_vars): above the roles' defaults loaded here.
            "-e",
            "monitoring_enabled=true",
            "-e",
            f"ansible_python_interpreter={bin_dir / 'python'}",
        ]
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return Monitoring(root, yaml.safe_load((root / "prometheus.yml").read_text()), result.stdout)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Monitoring:
    return _render(tmp_path_factory.mktemp("monitoring-single"), DEFAULT_INVENTORY)


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Monitoring:
    return _render(tmp_path_factory.mktemp("monitoring-multi"), MULTIHOST_INVENTORY)


def _jobs(config: dict) -> dict[str, dict]:
    return {job["job_name"]: job for job in config["scrape_configs"]}


def _targets(job: dict) -> list[str]:
    return [t for group in job["static_configs"] for t in group["targets"]]


def _promtool(tmp: Path) -> str | None:
    """promtool from PATH, else unpacked from Debian's prometheus package (apt-get download)."""
    found = shutil.which("promtool")
    if found:
        return found
    cache = REPO / ".dev" / "cache" / "promtool"
    binary = cache / "usr" / "bin" / "promtool"
    if binary.exists():
        return str(binary)
    if not shutil.which("apt-get"):
        return None
    cache.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(["apt-get", "download", "prometheus"], cwd=tmp, capture_output=True, timeout=300, check=False)
    debs = sorted(tmp.glob("prometheus_*.deb"))
    if got.returncode != 0 or not debs:
        return None
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs[0])], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(cache), "./usr/bin/promtool"], input=tar, check=True)
    return str(binary) if binary.exists() else None


# ---------------------------------------------------------------- static
def test_role_passes_ansible_lint_production_profile() -> None:
    result = run(
        [
            str(ansible_bin_dir() / "ansible-lint"),
            "-c",
            "tests/deploy/ansible-lint.yml",
            "roles/monitoring",
            MONITORING_PLAYBOOK,
        ],
        timeout=600,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    assert "Profile 'production' was required, and it passed" in out, out[-3000:]


@pytest.mark.parametrize("inventory", [DEFAULT_INVENTORY, MULTIHOST_INVENTORY], ids=["single", "multihost"])
def test_syntax_check(inventory: Path) -> None:
    result = run(
        [str(ansible_bin_dir() / "ansible-playbook"), "--syntax-check", "-i", str(inventory), MONITORING_PLAYBOOK]
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_site_imports_monitoring_last_and_off_by_default() -> None:
    site = yaml.safe_load((REPO / "site.yml").read_text())
    assert site[-1]["ansible.builtin.import_playbook"] == MONITORING_PLAYBOOK
    defaults = yaml.safe_load((REPO / "roles/monitoring/defaults/main.yml").read_text())
    assert defaults["monitoring_enabled"] is False
    group_vars = yaml.safe_load((REPO / "inventory/group_vars/all/main.yml").read_text())
    assert not group_vars.get("monitoring_enabled", False)
    # RabbitMQ's plugin follows monitoring_enabled, off when it is unset.
    rabbitmq = yaml.safe_load((REPO / "roles/rabbitmq/defaults/main.yml").read_text())
    assert rabbitmq["rabbitmq_prometheus_enabled"] == "{{ monitoring_enabled | default(false) }}"


@pytest.mark.parametrize("inventory", [DEFAULT_INVENTORY, MULTIHOST_INVENTORY], ids=["single", "multihost"])
def test_off_the_play_runs_no_task_and_gathers_no_facts(inventory: Path) -> None:
    """The multi-host example's addresses are unreachable: any task or fact gathering would fail."""
    result = run([str(ansible_bin_dir() / "ansible-playbook"), "-i", str(inventory), MONITORING_PLAYBOOK], timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "PLAY [Prometheus and node exporter" in out
    assert "TASK [" not in out and "Gathering Facts" not in out, out[-3000:]
    assert not re.search(r"(ok|changed|failed|unreachable)=[1-9]", out), out[-3000:]


# ---------------------------------------------------------------- rendered, monitoring on
def test_single_host_scrapes_api_rabbitmq_and_node_on_loopback(single: Monitoring) -> None:
    jobs = _jobs(single.config)
    assert set(jobs) == {"mlstack-api", "rabbitmq", "node"}
    assert _targets(jobs["mlstack-api"]) == ["127.0.0.1:8000"]
    assert jobs["mlstack-api"].get("metrics_path", "/metrics") == "/metrics"
    assert "authorization" not in jobs["mlstack-api"]  # /metrics is open on loopback
    assert _targets(jobs["rabbitmq"]) == ["127.0.0.1:15692"]
    assert _targets(jobs["node"]) == ["127.0.0.1:9100"]


def test_multihost_sends_the_api_token_from_a_file(multi: Monitoring) -> None:
    jobs = _jobs(multi.config)
    assert set(jobs) == {"mlstack-api", "rabbitmq", "node"}
    # The first api host runs Prometheus: itself on loopback, the other one by address.
    assert _targets(jobs["mlstack-api"]) == ["127.0.0.1:8000", "192.0.2.52:8000"]
    auth = jobs["mlstack-api"]["authorization"]
    assert auth == {"type": "Bearer", "credentials_file": "/etc/prometheus/mlstack-api.token"}
    assert _targets(jobs["rabbitmq"]) == ["192.0.2.21:15692", "192.0.2.22:15692", "192.0.2.23:15692"]
    text = (multi.root / "prometheus.yml").read_text()
    assert "credentials:" not in text.replace("credentials_file:", "")  # never the token itself


def test_rabbitmq_plugin_listens_on_loopback_on_one_host(single: Monitoring) -> None:
    conf = (single.root / "rabbitmq.conf").read_text()
    assert "prometheus.tcp.ip = 127.0.0.1" in conf and "prometheus.tcp.port = 15692" in conf


def test_api_keeps_its_metrics_in_its_runtime_directory(single: Monitoring) -> None:
    env = env_file(single.root / "mlstack.env")
    assert env["MLSTACK_METRICS_DIR"] == "/run/mlstack-api/metrics"
    unit = (single.root / "mlstack-api.service").read_text()
    assert re.search(r"^RuntimeDirectory=mlstack-api$", unit, re.M)


def test_rendered_configs_pass_promtool(single: Monitoring, multi: Monitoring, tmp_path: Path) -> None:
    promtool = _promtool(tmp_path)
    if promtool is None:
        pytest.fail("promtool unavailable (no promtool on PATH, apt-get download prometheus failed)")
    # The token file must exist for promtool: a stand-in at a path of our own.
    token = tmp_path / "token"
    token.write_text("stand-in")
    for rendered in (single, multi):
        config = tmp_path / f"prometheus-{rendered.root.parent.name}.yml"
        config.write_text(
            (rendered.root / "prometheus.yml").read_text().replace("/etc/prometheus/mlstack-api.token", str(token))
        )
        result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
