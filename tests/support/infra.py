"""The outside systems of a test stack: a RabbitMQ vhost, a MongoDB stand-in,
the API under gunicorn and Pub workers, each a real process."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import httpx
import pika
import pika.exceptions

from .procs import ManagedProcess, free_port, port_open, wait_for

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
GUNICORN_CONF = REPO / "services" / "mlstack" / "api" / "gunicorn_conf.py"
BUNDLES = REPO / "tests" / "bundles"
# A passive declare of a queue not declared yet is expected while waiting for a worker.
logging.getLogger("pika").setLevel(logging.CRITICAL)

# Settings must come from the test environment only, never from a host's /etc/mlstack/mlstack.env.
NO_ENV_FILE = "/nonexistent/mlstack-test.env"


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSTACK_")}
    env["MLSTACK_ENV_FILE"] = NO_ENV_FILE
    env["MLSTACK_LOG_LEVEL"] = "INFO"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def rabbitmqctl(*args: str, timeout: float = 60) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=timeout)


class RabbitVhost:
    """A vhost of its own per stack, so tests never collide with a dev stack or each other."""

    def __init__(self, label: str) -> None:
        self.name = f"mlstack-test-{secrets.token_hex(4)}-{label}"
        self.url = f"amqp://guest:guest@127.0.0.1:5672/{self.name}"

    def create(self) -> RabbitVhost:
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        return self

    def delete(self) -> None:
        rabbitmqctl("delete_vhost", self.name)

    def consumer_count(self, model_name: str) -> int:
        """Consumers on a model's queue (DESIGN.md: one durable queue `mlstack.model.<name>`)."""
        conn = pika.BlockingConnection(pika.URLParameters(self.url + "?connection_attempts=1&socket_timeout=3"))
        try:
            channel = conn.channel()
            try:
                ok = channel.queue_declare(queue=f"mlstack.model.{model_name}", passive=True)
            except pika.exceptions.ChannelClosedByBroker:  # 404: queue not declared yet
                return 0
            return int(ok.method.consumer_count)
        finally:
            if conn.is_open:
                conn.close()

    def wait_consumers(self, model_name: str, at_least: int = 1, timeout: float = 60) -> None:
        wait_for(
            lambda: self.consumer_count(model_name) >= at_least,
            timeout,
            f"{at_least} consumer(s) on the queue of {model_name} in vhost {self.name}",
            interval=0.25,
        )

    def wait_no_consumers(self, model_name: str, timeout: float = 30) -> None:
        wait_for(
            lambda: self.consumer_count(model_name) == 0,
            timeout,
            f"no consumer left on the queue of {model_name}",
            interval=0.2,
        )


class MongoServer:
    """nx-27017, the MongoDB wire-protocol stand-in; restartable on the same port and data dir."""

    def __init__(self, workdir: Path, label: str) -> None:
        self.workdir = workdir / f"mongo-{label}"
        self.data_dir = self.workdir / "data"
        self.port = free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}"
        self.proc: ManagedProcess | None = None
        self.label = label

    def start(self) -> MongoServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        exe = shutil.which("nx-27017", path=str(VENV_BIN)) or shutil.which("nx-27017")
        assert exe, "nx-27017 is not installed in the test venv"
        argv = [
            exe,
            "--data-dir", str(self.data_dir),
            "-p", str(self.port),
            "--pid-file", str(self.workdir / "nx.pid"),
            "--log-file", str(self.workdir / "nx.log"),
        ]  # fmt: skip
        self.proc = ManagedProcess(f"nx-27017[{self.label}]", argv, base_env(), self.workdir / "stdout.log")
        self.proc.start()
        wait_for(lambda: port_open(self.port), 20, f"nx-27017 on port {self.port}")
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        wait_for(lambda: not port_open(self.port), 10, f"port {self.port} to close")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


class ApiServer:
    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        api_token: str,
        worker_token: str,
        mongodb_uri: str,
        mongodb_db: str,
        amqp_url: str,
        extra_env: Mapping[str, str] | None = None,
        workers: int = 2,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = base_env()
        env.update(
            MLSTACK_API_TOKEN=api_token,
            MLSTACK_WORKER_TOKEN=worker_token,
            MLSTACK_MONGODB_URI=mongodb_uri,
            MLSTACK_MONGODB_DB=mongodb_db,
            MLSTACK_AMQP_URL=amqp_url,
            MLSTACK_BIND=f"127.0.0.1:{self.port}",
            MLSTACK_API_WORKERS=str(workers),
        )
        env.update(extra_env or {})
        argv = [str(VENV_BIN / "gunicorn"), "-c", str(GUNICORN_CONF), "mlstack.api.app:create_app()"]
        self.proc = ManagedProcess(f"api[{name}]", argv, env, workdir / f"api-{name}.log", cwd=REPO)

    def start(self, timeout: float = 45) -> ApiServer:
        self.proc.start()

        def ready() -> bool:
            if not self.proc.alive():
                raise AssertionError(f"API {self.name} exited:\n{self.proc.log_tail()}")
            return httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200

        try:
            wait_for(ready, timeout, f"API {self.name} /health/ready", interval=0.25)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n--- log of API {self.name}:\n{self.proc.log_tail()}") from None
        return self

    def stop(self) -> None:
        self.proc.stop()


class Worker:
    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        bundle_dir: Path,
        api_url: str,
        worker_token: str,
        amqp_url: str,
        python: str = sys.executable,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.bundle_dir = bundle_dir
        self.models = models_of(bundle_dir)
        self.home = workdir / f"worker-{name}"
        self.home.mkdir(parents=True, exist_ok=True)
        self.exec_log = self.home / "exec.jsonl"
        env = base_env()
        env.update(
            MLSTACK_API_URL=api_url,
            MLSTACK_WORKER_TOKEN=worker_token,
            MLSTACK_AMQP_URL=amqp_url,
            MLSTACK_BUNDLE_DIR=str(bundle_dir),
            MLSTACK_WORKER_ID=f"test-{name}",
            MLSTACK_STATE_DIR=str(self.home / "state"),
            MLSTACK_PREFETCH="1",
            # Read by the test bundles' models: one JSON line per model call.
            MLSTACK_TEST_EXEC_LOG=str(self.exec_log),
            # mllibprodest writes ./logs/ unless told to log to the console.
            STACK_LOG_OUTPUT="console",
        )
        env.update(extra_env or {})
        argv = [python, "-m", "mlstack.worker"]
        self.proc = ManagedProcess(f"worker[{name}]", argv, env, self.home / "worker.log", cwd=self.home)

    def start(self, vhost: RabbitVhost, timeout: float = 60) -> Worker:
        self.proc.start()
        try:
            for model in self.models:
                wait_for(
                    lambda m=model: self._alive() and vhost.consumer_count(m) >= 1,
                    timeout,
                    f"worker {self.name} consuming {model}",
                    interval=0.25,
                )
        except (TimeoutError, AssertionError) as exc:
            raise AssertionError(f"{exc}\n--- log of worker {self.name}:\n{self.proc.log_tail()}") from None
        return self

    def _alive(self) -> bool:
        if not self.proc.alive():
            raise AssertionError(f"worker {self.name} exited:\n{self.proc.log_tail()}")
        return True

    def stop(self) -> None:
        self.proc.stop()

    def kill(self) -> None:
        self.proc.kill()


def models_of(bundle_dir: Path) -> list[str]:
    import configparser

    conf = configparser.ConfigParser()
    conf.read(bundle_dir / "params.conf")
    return conf.sections()


def drop_dirs(paths: Iterable[Path]) -> None:
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)
