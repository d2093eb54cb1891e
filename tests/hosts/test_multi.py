"""`bin/test-hosts multi`: the stack spread over six booted Debian 12 hosts on a private bridge
with no route outward, converged by `ansible-playbook -i <inventory> site.yml`.

Layout (2 cores and 24 GiB here; see README "Multi-host"):
- mlstack-store: database + storage (the MongoDB and S3 stand-ins, as external services) and
  registry (MLflow);
- mlstack-q1, -q2, -q3: queue (a RabbitMQ cluster: quorum queues);
- mlstack-app1, -app2: api + workers (each runs the API and the example bundle's Pub worker).

Everything the hosts install comes from files the control node fetched first: Debian packages
(bin/fetch-debs), the wheelhouse (bin/fetch-wheels) and the stand-ins' wheels. The control node
(this process) joins the bridge too, so it has no route outward either once the hosts boot. The
tests run in file order and each leaves the site running for the next.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pymongo
import pytest
import yaml
from conftest import (
    LOG_DIR,
    REPO,
    WHEELHOUSE,
    Site,
    _collect_on_failure,
    log,
    phase,
    recaps,
    snapshot_checkout,
    wait_for,
)
from harness import BRIDGE_SUBNET, Harness, Host, Network, cached_rootfs, exclusive
from load import Load, wait_all_final

DEBS = REPO / ".dev/offline/debs"
STANDINS_WHEELS = REPO / ".dev/offline/standins-wheels"
STANDINS = ["nx-27017==0.8.1", "moto[server]==5.2.5"]
GROUPS = {
    "mlstack-store": ["database", "storage", "registry"],
    "mlstack-q1": ["queue"],
    "mlstack-q2": ["queue"],
    "mlstack-q3": ["queue"],
    "mlstack-app1": ["api", "workers"],
    "mlstack-app2": ["api", "workers"],
}
API_PORT = 8000
MODEL_QUEUE = "mlstack.model.CLF_IRIS"


@dataclass
class MultiSite(Site):
    hosts: dict[str, Host] = field(default_factory=dict)

    def api_urls(self, *names: str) -> list[str]:
        names = names or tuple(n for n, groups in GROUPS.items() if "api" in groups)
        return [f"https://{self.hosts[n].address}:{API_PORT}" for n in names]

    @property
    def ca_file(self) -> str:
        """The site CA the playbook made on the control node, beside the credentials."""
        return str(self.credentials.parent / "pki" / "ca.crt")

    def on(self, name: str, command: str, check: bool = True, timeout: float = 300) -> str:
        return self.hosts[name].ssh(command, check=check, timeout=timeout).stdout


def _fetch_offline_files() -> None:
    """What a connected machine gathers before it goes to an isolated site (README)."""
    subprocess.run([str(REPO / "bin/fetch-wheels"), str(WHEELHOUSE)], check=True)
    subprocess.run([str(REPO / "bin/fetch-debs"), str(DEBS)], check=True)
    stamp = STANDINS_WHEELS / ".inputs"
    if not stamp.exists() or stamp.read_text() != "\n".join(STANDINS):
        pip = REPO / ".dev/venvs/wheel-tools/bin/pip"  # made by bin/fetch-wheels
        subprocess.run([str(pip), "wheel", "-q", "--wheel-dir", str(STANDINS_WHEELS), *STANDINS], check=True)
        stamp.write_text("\n".join(STANDINS))


def _write_inventory(tmp: Path, hosts: dict[str, Host], source: Path) -> tuple[Path, Path, Path]:
    (tmp / "inventory").mkdir(parents=True, exist_ok=True)
    group_vars = tmp / "inventory" / "group_vars"
    if not group_vars.exists():
        group_vars.symlink_to(source / "inventory" / "group_vars")
    key = next(iter(hosts.values())).ssh_key
    hostvars = {
        name: {"ansible_host": host.address, "ansible_user": "root", "ansible_ssh_private_key_file": str(key)}
        for name, host in hosts.items()
    }
    children: dict[str, dict[str, dict[str, None]]] = {}
    for name, groups in GROUPS.items():
        for group in groups:
            children.setdefault(group, {"hosts": {}})["hosts"][name] = None
    inventory = tmp / "inventory" / "hosts.yml"
    common = {
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "mlstack_become": False,
    }
    inventory.write_text(yaml.safe_dump({"all": {"vars": common, "hosts": hostvars, "children": children}}))
    store = hosts["mlstack-store"].address
    credentials = tmp / "credentials" / "mlstack.yml"
    vars_file = tmp / "site-vars.yml"
    site_vars = {
        "mongodb_install": False,
        "mongodb_external_uri": f"mongodb://{store}:27017",
        "minio_install": False,
        "minio_external_endpoint": f"http://{store}:9000",
        "minio_external_access_key": "test-access-key",
        "minio_external_secret_key": "test-secret-key",
        "mlstack_credentials_file": str(credentials),
        "health_interval": "1min",
        "mlstack_wheelhouse_src": str(WHEELHOUSE),
        "mlstack_deb_src": str(DEBS),
        "standins_wheels_src": str(STANDINS_WHEELS),
    }
    vars_file.write_text(yaml.safe_dump(site_vars))
    return inventory, vars_file, credentials


@pytest.fixture(scope="module")
def multi(harness: Harness, request: pytest.FixtureRequest) -> Iterator[MultiSite]:
    log_dir = LOG_DIR / harness.run_dir.name
    log_dir.mkdir(parents=True, exist_ok=True)
    with phase("offline files (bin/fetch-wheels, bin/fetch-debs, the stand-ins' wheels)"), exclusive("offline-files"):
        _fetch_offline_files()
    # Built (debootstrap, once) while this process can still reach the Debian mirror.
    with phase("the hosts' root filesystem (cached)"):
        cached_rootfs()
    with phase(f"boot {len(GROUPS)} hosts on a bridge with no route outward"):
        network = Network(str(harness.run_dir.name))
        harness.network = network
        network.create()
        network.enter()  # from here on, this process and its children live on the bridge only
        addresses = {name: f"{BRIDGE_SUBNET}.{10 + n}" for n, name in enumerate(GROUPS, 1)}
        hosts: dict[str, Host] = {}
        for n, name in enumerate(GROUPS, 1):
            hosts[name] = harness.new_host(name, offline_hosts=addresses)
            network.attach(hosts[name], n)
        for host in hosts.values():
            host.boot()
        source = snapshot_checkout(harness.run_dir / "checkout")
    inventory, vars_file, credentials = _write_inventory(harness.run_dir, hosts, source)
    site = MultiSite(hosts["mlstack-store"], inventory, vars_file, credentials, log_dir, source, hosts=hosts)
    try:
        result = site.standins_then_converge("ansible-playbook -i <6 hosts> site.yml")
        assert result.returncode == 0, result.stdout[-10000:] + result.stderr[-3000:]
        yield site
    finally:
        for host in hosts.values():
            _collect_on_failure(request, host, log_dir)


def _rabbit_running_nodes(site: MultiSite, on: str) -> list[str]:
    out = site.on(on, "rabbitmqctl cluster_status --formatter json", check=False)
    try:
        return sorted(json.loads(out).get("running_nodes", []))
    except ValueError:
        return []


def _served_by(site: MultiSite, job_ids: list[str]) -> dict[str, str]:
    """Which worker ran each job (the lease the API gave it), read from the database stand-in."""
    client: pymongo.MongoClient = pymongo.MongoClient(
        f"mongodb://{site.hosts['mlstack-store'].address}:27017", serverSelectionTimeoutMS=5000
    )
    try:
        docs = client["ml_api_db"]["col_jobs"].find({"_id": {"$in": job_ids}}, {"lease_worker": 1})
        return {str(d["_id"]): str(d.get("lease_worker", "")) for d in docs}
    finally:
        client.close()


def _assert_all_done(site: MultiSite, load: Load, timeout: float = 300) -> dict[str, str]:
    accepted = load.accepted()
    assert accepted, f"no job accepted; refusals: {[a.error for a in load.refused()][:5]}"
    final = wait_all_final(site.api_urls(*_api_hosts_up(site)), site.api_token(), accepted, timeout, site.ca_file)
    lost = {j: s for j, s in final.items() if s != "Done"}
    assert not lost, f"{len(lost)} of {len(accepted)} accepted jobs did not end Done: {list(lost.items())[:10]}"
    assert len(final) == len(accepted)
    return final


def _api_hosts_up(site: MultiSite) -> list[str]:
    return [n for n, g in GROUPS.items() if "api" in g and site.hosts[n].nspawn is not None]


def _results_not_applied(site: MultiSite, names: list[str], since: str) -> str:
    """Worker log lines of a job that ran to completion on a second worker (its result refused)."""
    return "".join(
        site.on(n, f"journalctl --since '{since}' -u 'mlstack-worker-pub@*' --no-pager | grep 'not applied' || true")
        for n in names
    )


# ---------------------------------------------------------------- after the converge
def test_hosts_have_no_route_outward(multi: MultiSite) -> None:
    for name in GROUPS:
        routes = multi.on(name, "ip route show")
        assert "default" not in routes, f"{name}: {routes}"
        # deb.debian.org's (Fastly) address: unreachable, not merely unresolved.
        probe = multi.on(
            name,
            "python3 -c \"import socket; socket.create_connection(('151.101.2.132', 80), timeout=3)\" 2>&1; echo rc=$?",
            check=False,
        )
        assert "rc=1" in probe and "unreachable" in probe.lower(), f"{name}: {probe}"


def test_a_second_converge_changes_nothing(multi: MultiSite) -> None:
    with phase("second converge"):
        result = multi.playbook("site.yml")
    assert result.returncode == 0, result.stdout[-6000:]
    per_host = recaps(result.stdout)
    assert set(per_host) >= set(GROUPS), per_host
    changed = [line for line in result.stdout.splitlines() if line.startswith("changed:")]
    assert all(r["changed"] == 0 for r in per_host.values()), "\n".join(changed) + result.stdout[-3000:]


# Listening beyond the loopback without TLS, on purpose: SSH (its own encryption); the stand-ins of
# the external MongoDB and S3 services (they offer no TLS: architecture.md); epmd on the queue hosts
# (4369: it maps node names to ports, README "TLS").
NOT_TLS = {name: {22} | ({4369} if "queue" in groups else set()) for name, groups in GROUPS.items()}
NOT_TLS["mlstack-store"] |= {27017, 9000}
# What must answer TLS with the host's certificate from the site CA (25672: Erlang distribution).
TLS_EXPECTED = {"mlstack-store": {5000}, "mlstack-app1": {8000}, "mlstack-app2": {8000}}
TLS_EXPECTED |= {f"mlstack-q{n}": {5671, 15672, 25672} for n in (1, 2, 3)}


def _ports_beyond_loopback(site: MultiSite, name: str) -> set[int]:
    ports = set()
    for line in site.on(name, "ss -ltnH").splitlines():
        address, port = line.split()[3].rsplit(":", 1)
        if not address.strip("[]").startswith(("127.", "::1")):
            ports.add(int(port))
    return ports


def _tls_handshake(address: str, port: int, ca_file: str) -> str:
    """'' when the port answers TLS with a certificate the site CA signed for `address`, else why not."""
    context = ssl.create_default_context(cafile=ca_file)
    try:
        with (
            socket.create_connection((address, port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=address),
        ):
            return ""
    except (OSError, ssl.SSLError) as exc:
        return f"{exc.__class__.__name__}: {exc}"


def _refuses_a_peer_without_certificate(address: str, port: int, ca_file: str) -> bool:
    """True when the TLS server at address:port drops a client that shows no certificate."""
    context = ssl.create_default_context(cafile=ca_file)
    try:
        with (
            socket.create_connection((address, port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=address) as tls,
        ):
            # TLS 1.3: the server judges the client's (empty) certificate after the handshake.
            return tls.recv(1) == b""
    except (ssl.SSLError, ConnectionResetError):
        return True
    except TimeoutError:  # let in: it waits for the Erlang distribution handshake
        return False


def test_nothing_listens_in_plain_text_beyond_the_loopback(multi: MultiSite) -> None:
    """TLS between hosts is on by default here (the hosts' addresses are not loopback ones)."""
    plain, served = {}, {}
    for name, host in multi.hosts.items():
        for port in sorted(_ports_beyond_loopback(multi, name)):
            error = _tls_handshake(host.address, port, multi.ca_file)
            if not error:
                served.setdefault(name, set()).add(port)
            elif port not in NOT_TLS[name]:
                plain[f"{name}:{port}"] = error
    assert not plain, plain
    assert all(TLS_EXPECTED[name] <= served.get(name, set()) for name in TLS_EXPECTED), served
    # Plain AMQP stays on each queue host's loopback (local tools only).
    for n in (1, 2, 3):
        assert 5672 not in _ports_beyond_loopback(multi, f"mlstack-q{n}")
    # The Erlang distribution lets in only peers with a certificate of the site CA, not just the cookie.
    for n in (1, 2, 3):
        assert _refuses_a_peer_without_certificate(multi.hosts[f"mlstack-q{n}"].address, 25672, multi.ca_file)


def test_the_queue_hosts_form_one_cluster_with_quorum_queues(multi: MultiSite) -> None:
    nodes = _rabbit_running_nodes(multi, "mlstack-q2")
    assert nodes == ["rabbit@mlstack-q1", "rabbit@mlstack-q2", "rabbit@mlstack-q3"], nodes
    queues = multi.on("mlstack-q2", "rabbitmqctl list_queues -p mlstack name type --formatter json")
    types = {q["name"]: q["type"] for q in json.loads(queues)}
    assert types.get(MODEL_QUEUE) == "quorum", types


def test_jobs_through_either_api_end_done_on_both_worker_hosts(multi: MultiSite) -> None:
    with Load(multi.api_urls(), multi.api_token(), multi.ca_file, interval_s=0.05) as load:
        wait_for("60 accepted jobs", lambda: len(load.accepted()) >= 60, 120, 0.5)
    _assert_all_done(multi, load)
    through = {a.api for a in load.attempts if a.job_id}
    assert through == set(multi.api_urls()), through
    served = _served_by(multi, load.accepted())
    # A worker's id is <host>-<instance> (MLSTACK_WORKER_ID).
    hosts = {h for worker in served.values() for h in ("mlstack-app1", "mlstack-app2") if worker.startswith(h + "-")}
    assert hosts == {"mlstack-app1", "mlstack-app2"}, served


def test_a_queue_node_powered_off_under_load_loses_nothing(multi: MultiSite) -> None:
    # q1 is the node every client lists first, i.e. the one they are connected to.
    with Load(multi.api_urls(), multi.api_token(), multi.ca_file) as load:
        wait_for("jobs accepted before the power-off", lambda: len(load.accepted()) >= 20, 60, 0.5)
        with phase("power off mlstack-q1 under load"):
            multi.hosts["mlstack-q1"].poweroff()
        off_at = time.time()
        wait_for("jobs accepted after the power-off", lambda: len(load.accepted(since=off_at + 5)) >= 50, 120, 0.5)
    final = _assert_all_done(multi, load)
    log(
        f"queue node loss: {len(final)} jobs Done, {len(load.refused())} refusals, "
        f"{len(load.unserved_rounds())} rounds no API accepted"
    )
    assert _rabbit_running_nodes(multi, "mlstack-q2") == ["rabbit@mlstack-q2", "rabbit@mlstack-q3"]
    with phase("boot mlstack-q1 again: it rejoins"):
        multi.hosts["mlstack-q1"].boot()
        wait_for("three running nodes", lambda: len(_rabbit_running_nodes(multi, "mlstack-q2")) == 3, 180, 2)


def test_a_worker_host_powered_off_under_load_loses_nothing_and_runs_nothing_twice(multi: MultiSite) -> None:
    since = multi.on("mlstack-app1", "date '+%Y-%m-%d %H:%M:%S'").strip()
    # The API on app1 only: app2's goes down with its host.
    with Load(multi.api_urls("mlstack-app1"), multi.api_token(), multi.ca_file) as load:
        wait_for("jobs on both worker hosts", lambda: len(load.accepted()) >= 40, 60, 0.5)
        with phase("power off mlstack-app2 under load"):
            multi.hosts["mlstack-app2"].poweroff()
        off_at = time.time()
        wait_for("jobs accepted after the power-off", lambda: len(load.accepted(since=off_at)) >= 40, 120, 0.5)
    _assert_all_done(multi, load)
    served = _served_by(multi, load.accepted())
    assert any(w.startswith("mlstack-app2-") for w in served.values()), "app2 served none before its power-off"
    assert not _results_not_applied(multi, ["mlstack-app1"], since)
    assert not load.refused(), load.refused()[:5]
    with phase("boot mlstack-app2 again"):
        multi.hosts["mlstack-app2"].boot()
        wait_for(
            "app2's API and worker",
            lambda: (
                multi.on(
                    "mlstack-app2", "systemctl is-active mlstack-api mlstack-worker-pub@example_bundle-1", check=False
                ).split()
                == ["active", "active"]
            ),
            180,
            2,
        )


def test_a_rolling_restart_always_leaves_an_api_and_a_worker_serving(multi: MultiSite) -> None:
    apps = ["mlstack-app1", "mlstack-app2"]
    units = "mlstack-api mlstack-worker-pub@example_bundle-1"

    def main_pids() -> dict[str, str]:
        return {n: multi.on(n, f"systemctl show -P MainPID {units}") for n in apps}

    before = main_pids()
    consumers: list[int] = []
    changed = {"api_extra_env": {"MLSTACK_ROLLOUT": "2"}, "worker_pub_extra_env": {"MLSTACK_ROLLOUT": "2"}}
    rollout = multi.vars_file.parent / "rollout.yml"
    rollout.write_text(yaml.safe_dump(changed))
    with Load(multi.api_urls(), multi.api_token(), multi.ca_file) as load:
        started = time.time()
        with phase("rolling restart: site.yml --tags api,worker_pub with a changed API and worker setting"):
            result = _converge_watching_consumers(multi, consumers, "--tags", "api,worker_pub", "-e", f"@{rollout}")
        assert result.returncode == 0, result.stdout[-6000:]
    after = main_pids()
    restarted = {n: [a != b for a, b in zip(before[n].split(), after[n].split(), strict=True)] for n in apps}
    assert all(all(r) for r in restarted.values()), (before, after)
    assert not load.unserved_rounds(), f"no API accepted a job at {load.unserved_rounds()[:5]} (since {started})"
    assert consumers and min(consumers) >= 1, f"model queue consumers seen during the rollout: {consumers}"
    _assert_all_done(multi, load)


def _converge_watching_consumers(
    multi: MultiSite, consumers: list[int], *args: str
) -> subprocess.CompletedProcess[str]:
    """site.yml (in a thread) while this loop samples the model queue's consumer count on a
    queue node every second."""
    out: dict[str, subprocess.CompletedProcess[str]] = {}
    runner = threading.Thread(target=lambda: out.setdefault("r", multi.playbook("site.yml", *args)))
    runner.start()
    while runner.is_alive():
        raw = multi.on("mlstack-q2", "rabbitmqctl list_queues -p mlstack name consumers --formatter json", check=False)
        try:
            counts = {q["name"]: int(q["consumers"]) for q in json.loads(raw)}
            consumers.append(counts.get(MODEL_QUEUE, 0))
        except ValueError:
            pass
        time.sleep(1)
    runner.join()
    return out["r"]


def test_switching_the_erlang_distribution_to_plain_restarts_the_cluster_whole_and_loses_no_job(
    multi: MultiSite,
) -> None:
    """Nodes speaking plain and TLS distribution cannot talk, so the role stops every node and starts
    them together (a rolling restart would stall). Last test: the cluster stays plain afterwards."""
    switch = multi.vars_file.parent / "plain-distribution.yml"
    switch.write_text(yaml.safe_dump({"rabbitmq_distribution_tls": False}))
    q2 = multi.hosts["mlstack-q2"].address
    assert not _tls_handshake(q2, 25672, multi.ca_file)
    with Load(multi.api_urls(), multi.api_token(), multi.ca_file) as load:
        wait_for("jobs accepted before the switch", lambda: len(load.accepted()) >= 20, 60, 0.5)
        switch_started = int(time.time())  # the hosts share this machine's clock
        with phase("switch the Erlang distribution to plain: site.yml --tags rabbitmq"):
            result = multi.playbook("site.yml", "--tags", "rabbitmq", "-e", f"@{switch}")
        assert result.returncode == 0, result.stdout[-6000:]
        # Each node was stopped while its CLI still spoke the node's protocol: systemd's
        # ExecStop (rabbitmqctl shutdown) succeeded rather than systemd killing the node.
        for name in (n for n, groups in GROUPS.items() if "queue" in groups):
            journal = multi.on(name, f"journalctl -u rabbitmq-server --since @{switch_started} --no-pager -o cat")
            assert "Stopped rabbitmq-server" in journal or "Deactivated successfully" in journal, journal[-3000:]
            assert "Control process exited" not in journal, f"{name} did not stop cleanly:\n{journal[-3000:]}"
        done_at = time.time()
        wait_for("jobs accepted after the switch", lambda: len(load.accepted(since=done_at)) >= 20, 120, 0.5)
    nodes = _rabbit_running_nodes(multi, "mlstack-q2")
    assert nodes == ["rabbit@mlstack-q1", "rabbit@mlstack-q2", "rabbit@mlstack-q3"], nodes
    assert _tls_handshake(q2, 25672, multi.ca_file), "the distribution port still answers TLS"
    final = _assert_all_done(multi, load)
    log(f"distribution switch: {len(final)} jobs Done, {len(load.refused())} refusals during the outage")
