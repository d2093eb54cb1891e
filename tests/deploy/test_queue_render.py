"""RabbitMQ connection variables as rendered: every node of the `queue` group in MLSTACK_AMQP_URL
(comma-separated, same user and vhost), and quorum queues from 3 nodes on (classic on one host).
The rendered files are read back with the services' own settings parser."""

from __future__ import annotations

from pathlib import Path

from deploy_support import Rendered, env_file
from mlstack.settings import ApiSettings, WorkerSettings

MQ = ["192.0.2.21", "192.0.2.22", "192.0.2.23"]  # mq1..mq3 of inventory/example-multihost.yml


def _parsed(root: Path, tmp_path: Path) -> list[tuple[tuple[str, ...], str]]:
    """(URLs, queue type) of the API and the workers of one rendered host, as the services read them."""
    api = {**env_file(root / "etc/mlstack/mlstack.env"), "MLSTACK_ENV_FILE": "/nonexistent/render.env"}
    (tmp_path / "params.conf").write_text("")
    worker = {
        **env_file(root / "etc/mlstack/worker.env"),
        "MLSTACK_ENV_FILE": "/nonexistent/render.env",
        "MLSTACK_BUNDLE_DIR": str(tmp_path),
        "MLSTACK_STATE_DIR": str(tmp_path / "state"),
    }
    found = []
    for settings in (ApiSettings.from_env(api), WorkerSettings.from_env(worker)):
        found.append((settings.broker.amqp_urls, settings.broker.queue_type))
    return found


def test_three_queue_nodes_give_three_urls_and_quorum_queues(rendered_multihost: Rendered) -> None:
    for host, file in (("api1", "mlstack.env"), ("worker1", "worker.env"), ("worker2", "worker.env")):
        env = env_file(rendered_multihost.host(host) / "etc/mlstack" / file)
        urls = env["MLSTACK_AMQP_URL"].split(",")
        # Several hosts: TLS between them (AMQPS, tests/deploy/test_tls_render.py).
        assert [u.split("@", 1)[1] for u in urls] == [f"{a}:5671/mlstack" for a in MQ], urls
        user = "mlstack-api" if file == "mlstack.env" else "mlstack-worker"  # one user per component
        assert all(u.startswith(f"amqps://{user}:") for u in urls), "the component's user on every node"
        assert len({u.split("@", 1)[0] for u in urls}) == 1, "the same credentials on every node"
        assert env["MLSTACK_QUEUE_TYPE"] == "quorum", host
    api = {**env_file(rendered_multihost.host("api1") / "etc/mlstack/mlstack.env"), "MLSTACK_ENV_FILE": "/none"}
    broker = ApiSettings.from_env(api).broker  # the API accepts what was rendered
    assert (len(broker.amqp_urls), broker.queue_type) == (3, "quorum")


def test_one_host_gives_one_url_and_classic_queues(rendered_default: Rendered, tmp_path: Path) -> None:
    for urls, queue_type in _parsed(rendered_default.host("localhost"), tmp_path):
        assert len(urls) == 1 and urls[0].endswith("@127.0.0.1:5672/mlstack"), urls
        assert queue_type == "classic"
