"""What a worker's heartbeat says per model: loaded version, production version and state."""

from __future__ import annotations

from types import SimpleNamespace

from mlstack.worker.main import PubWorker
from mlstack.worker.status import ModelState


def test_the_heartbeat_carries_production_version_and_state() -> None:
    models = {
        "B": ModelState(loaded_version="2", production_version="3", state="stale"),
        "A": ModelState(loaded_version="1"),  # no registry: no production version, loading until checked
    }
    fake = SimpleNamespace(status=SimpleNamespace(models=models))
    assert PubWorker.announced_models.fget(fake) == [  # type: ignore[attr-defined]
        {"name": "A", "version": "1", "production_version": "", "state": "loading"},
        {"name": "B", "version": "2", "production_version": "3", "state": "stale"},
    ]
