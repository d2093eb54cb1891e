"""A test stack: one vhost, one database, one or more API processes and Pub workers."""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pymongo

from .client import ApiClient
from .infra import BUNDLES, ApiServer, MongoServer, RabbitVhost, Worker


class Stack:
    def __init__(
        self,
        label: str,
        workdir: Path,
        mongo: MongoServer,
        *,
        db_name: str = "ml_api_db",
        api_env: Mapping[str, str] | None = None,
    ) -> None:
        self.label = label
        self.workdir = workdir / f"stack-{label}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mongo = mongo
        self.db_name = db_name
        self.api_env = dict(api_env or {})
        self.api_token = secrets.token_urlsafe(24)
        self.worker_token = secrets.token_urlsafe(24)
        self.vhost = RabbitVhost(label)
        self.apis: list[ApiServer] = []
        self.workers: dict[str, Worker] = {}
        self._clients: list[ApiClient] = []

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Stack:
        self.vhost.create()
        self.add_api()
        return self

    def add_api(self) -> ApiServer:
        api = ApiServer(
            f"{self.label}-{len(self.apis) + 1}",
            self.workdir,
            api_token=self.api_token,
            worker_token=self.worker_token,
            mongodb_uri=self.mongo.uri,
            mongodb_db=self.db_name,
            amqp_url=self.vhost.url,
            extra_env=self.api_env,
        ).start()
        self.apis.append(api)
        return api

    def add_worker(
        self,
        name: str,
        bundle: str | Path,
        *,
        python: str = sys.executable,
        extra_env: Mapping[str, str] | None = None,
        api_index: int = 0,
    ) -> Worker:
        bundle_dir = Path(bundle) if isinstance(bundle, Path) else BUNDLES / bundle / "worker_pub"
        if name in self.workers and self.workers[name].proc.alive():
            raise AssertionError(f"worker {name} already running in stack {self.label}")
        worker = Worker(
            name,
            self.workdir,
            bundle_dir=bundle_dir,
            api_url=self.apis[api_index].url,
            worker_token=self.worker_token,
            amqp_url=self.vhost.url,
            python=python,
            extra_env=extra_env,
        )
        self.workers[name] = worker
        return worker.start(self.vhost)

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        for worker in self.workers.values():
            worker.stop()
        for api in self.apis:
            api.stop()
        try:
            self.vhost.delete()
        except Exception as exc:  # the broker may be stopped if a destructive test failed badly
            print(f"could not delete vhost {self.vhost.name}: {exc!r}", file=sys.stderr)

    # -- access ----------------------------------------------------------------------------------
    def client(self, api_index: int = 0, token: str | None = None) -> ApiClient:
        c = ApiClient(self.apis[api_index].url, self.api_token if token is None else token)
        self._clients.append(c)
        return c

    @contextlib.contextmanager
    def jobs_collection(self) -> Iterator[pymongo.collection.Collection]:
        """This stack's col_jobs, read straight from the database (what the API stored)."""
        client: pymongo.MongoClient = pymongo.MongoClient(self.mongo.uri, serverSelectionTimeoutMS=5000)
        try:
            yield client[self.db_name]["col_jobs"]
        finally:
            client.close()

    def exec_events(self) -> list[dict]:
        """Every model call the test bundles logged, over all workers (alive or not) of this stack."""
        events: list[dict] = []
        for log in sorted(self.workdir.glob("worker-*/exec.jsonl")):
            for line in log.read_text().splitlines():
                if line.strip():
                    events.append(json.loads(line))
        return events

    def logs(self) -> str:
        parts = [f"--- {api.name}:\n{api.proc.log_tail(30)}" for api in self.apis]
        parts += [f"--- worker {w.name}:\n{w.proc.log_tail(30)}" for w in self.workers.values()]
        return "\n".join(parts)
