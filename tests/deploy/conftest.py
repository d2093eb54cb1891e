"""Fixtures of the deployment tests: the playbooks rendered for both inventories."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_support import DEFAULT_INVENTORY, MULTIHOST_INVENTORY, Rendered, render


def _render(tmp: Path, inventory: Path) -> Rendered:
    root, credentials = tmp / "hosts", tmp / "credentials" / "mlstack.yml"
    result = render(inventory, root, credentials)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return Rendered(root, credentials, result.stdout + result.stderr)


@pytest.fixture(scope="session")
def rendered_default(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendered]:
    yield _render(tmp_path_factory.mktemp("render-default"), DEFAULT_INVENTORY)


@pytest.fixture(scope="session")
def rendered_multihost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendered]:
    yield _render(tmp_path_factory.mktemp("render-multihost"), MULTIHOST_INVENTORY)
