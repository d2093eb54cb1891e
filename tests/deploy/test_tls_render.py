"""TLS between hosts as rendered: on the example multi-host inventory every service that listens
beyond the loopback serves TLS with the host's certificate and every client URL is https/amqps;
on one host (everything on the loopback) nothing changes. tests/deploy/test_pki.py makes the
certificates; tests/hosts/test_multi.py runs all of it on booted hosts."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import yaml
from deploy_support import Rendered, env_file
from mlstack.settings import ApiSettings

SCHEMES = ("http://", "https://", "amqp://", "amqps://", "mongodb://")


def _urls(root: Path) -> dict[str, str]:
    """Every URL-valued setting of every env file under root: '<host>:<file>:<name>' -> value."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and (path.suffix == ".env" or path.parent.name == "default"):
            for name, value in env_file(path).items():
                for part in value.strip('"').split():
                    # A MongoDB URI lists its hosts with commas; a broker URL list is one URL per node.
                    for url in [part] if part.startswith("mongodb://") else part.split(","):
                        if url.startswith(SCHEMES):
                            where = f"{path.relative_to(root).parts[0]}:{path.name}:{name}"
                            found[f"{where}:{url.rsplit('@', 1)[-1]}"] = url
    return found


def test_every_url_between_hosts_is_encrypted(rendered_multihost: Rendered) -> None:
    urls = _urls(rendered_multihost.root)
    assert len(urls) > 20, urls
    plain = {k: v for k, v in urls.items() if v.startswith(("http://", "amqp://"))}
    assert not plain, plain
    mongo = [v for v in urls.values() if v.startswith("mongodb://")]
    assert mongo and all(v.endswith("&tls=true") for v in mongo), mongo


def test_one_host_keeps_plain_connections_on_the_loopback(rendered_default: Rendered) -> None:
    root = rendered_default.host("localhost")
    urls = _urls(rendered_default.root)
    assert urls and all("//127.0.0.1:" in v or "@127.0.0.1:" in v for v in urls.values()), urls
    assert not [v for v in urls.values() if v.startswith(("https://", "amqps://"))], urls
    assert "ssl" not in (root / "etc/rabbitmq/rabbitmq.conf").read_text()
    assert "MLSTACK_TLS_CERT_FILE" not in env_file(root / "etc/mlstack/mlstack.env")
    assert "--ssl-certfile" not in (root / "etc/systemd/system/mlflow.service").read_text()
    assert "REQUESTS_CA_BUNDLE" not in env_file(root / "etc/mlstack/worker.env")


def test_rabbitmq_serves_amqps_beyond_the_loopback_and_plain_amqp_on_it_only(rendered_multihost: Rendered) -> None:
    conf = (rendered_multihost.host("mq2") / "etc/rabbitmq/rabbitmq.conf").read_text()
    settings = dict(line.split(" = ", 1) for line in conf.splitlines() if " = " in line and not line.startswith("#"))
    assert settings["listeners.tcp.1"] == "127.0.0.1:5672"
    assert settings["listeners.ssl.default"] == "0.0.0.0:5671"
    assert settings["ssl_options.certfile"] == "/etc/rabbitmq/tls/host.crt"
    assert settings["ssl_options.keyfile"] == "/etc/rabbitmq/tls/host.key"
    assert "management.tcp.port" not in settings and settings["management.ssl.port"] == "15672"


def test_api_serves_https_with_the_host_certificate(rendered_multihost: Rendered, tmp_path: Path) -> None:
    env = env_file(rendered_multihost.host("api2") / "etc/mlstack/mlstack.env")
    assert (env["MLSTACK_TLS_CERT_FILE"], env["MLSTACK_TLS_KEY_FILE"]) == (
        "/etc/mlstack/api-tls/host.crt",
        "/etc/mlstack/api-tls/host.key",
    )
    settings = ApiSettings.from_env({**env, "MLSTACK_ENV_FILE": "/nonexistent", "MLSTACK_STATE_DIR": str(tmp_path)})
    assert settings.tls_cert_file == "/etc/mlstack/api-tls/host.crt"


def test_mlflow_serves_https_through_uvicorn(rendered_multihost: Rendered) -> None:
    unit = (rendered_multihost.host("mlflow1") / "etc/systemd/system/mlflow.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))  # systemd quotes like a shell here
    opts = argv[argv.index("--uvicorn-opts") + 1]
    assert opts == "--ssl-certfile /etc/mlflow/tls/host.crt --ssl-keyfile /etc/mlflow/tls/host.key"


def test_minio_and_mongod_require_tls(rendered_multihost: Rendered) -> None:
    minio = env_file(rendered_multihost.host("s3-1") / "etc/default/minio")
    assert minio["MINIO_OPTS"].strip('"').endswith("--certs-dir /etc/minio/certs")
    mongod = yaml.safe_load((rendered_multihost.host("db1") / "etc/mongod.conf").read_text())
    assert mongod["net"]["tls"] == {
        "mode": "requireTLS",
        "certificateKeyFile": "/etc/mongodb-tls/host.pem",
        "CAFile": "/etc/mongodb-tls/ca.crt",
        "allowConnectionsWithoutCertificates": True,
    }


def test_python_clients_with_their_own_ca_lists_use_the_system_store(rendered_multihost: Rendered) -> None:
    for host, file in (("worker1", "worker.env"), ("worker2", "worker.env"), ("worker1", "retrain.env")):
        env = env_file(rendered_multihost.host(host) / "etc/mlstack" / file)
        assert env["REQUESTS_CA_BUNDLE"] == env["AWS_CA_BUNDLE"] == "/etc/ssl/certs/ca-certificates.crt", (host, file)


def _erlang_options(path: Path) -> dict[str, str]:
    """The inter-node TLS option file read by Erlang itself: '<server|client>.<option>' -> value (~p)."""
    program = (
        f'case file:consult("{path}") of {{ok, [Opts]}} -> '
        '[io:format("~s.~s=~p~n", [Side, Key, Value]) || {Side, List} <- Opts, {Key, Value} <- List], halt(0); '
        'Error -> io:format("~p~n", [Error]), halt(1) end.'
    )
    result = subprocess.run(["erl", "-noinput", "-eval", program], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def test_cluster_nodes_speak_erlang_distribution_over_tls_with_certificates_both_ways(
    rendered_multihost: Rendered,
) -> None:
    options = _erlang_options(rendered_multihost.host("mq2") / "etc/rabbitmq/inter_node_tls.config")
    for side in ("server", "client"):
        assert options[f"{side}.verify"] == "verify_peer", options
        assert options[f"{side}.certfile"] == '"/etc/rabbitmq/tls/host.crt"', options
        assert options[f"{side}.keyfile"] == '"/etc/rabbitmq/tls/host.key"', options
        assert options[f"{side}.cacertfile"] == '"/etc/rabbitmq/tls/ca.crt"', options
    # A node or CLI tool without a certificate of the site CA is refused, whatever cookie it has.
    assert options["server.fail_if_no_peer_cert"] == "true", options


def test_one_queue_host_needs_no_distribution_tls(rendered_default: Rendered) -> None:
    assert not (rendered_default.host("localhost") / "etc/rabbitmq/inter_node_tls.config").exists()
