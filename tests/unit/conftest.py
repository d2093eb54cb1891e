"""The unit tier: in-process tests of pure logic (no RabbitMQ, database or child process).

Every test here gets the `unit` marker and a short time limit from tests/conftest.py;
`bin/test tests/unit` runs the whole tier in seconds.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mlstack.settings import ApiSettings

API_TOKEN = "client-token-for-unit-tests"
WORKER_TOKEN = "worker-token-for-unit-tests"


@pytest.fixture
def api_settings() -> ApiSettings:
    return ApiSettings.from_env(
        {
            "MLSTACK_ENV_FILE": "/nonexistent/mlstack-unit.env",
            "MLSTACK_API_TOKEN": API_TOKEN,
            "MLSTACK_WORKER_TOKEN": WORKER_TOKEN,
        }
    )


@pytest.fixture
def offline_app(api_settings: ApiSettings):  # type: ignore[no-untyped-def]
    """The real app with no lifespan run: requests stop at auth, body checks and validation.

    ``app.state.services`` holds only the settings; a request that gets past validation to a
    route body fails loudly (no store), which these tests never do on purpose.
    """
    from mlstack.api.app import create_app

    app = create_app(api_settings)
    app.state.services = SimpleNamespace(settings=api_settings)
    return app
