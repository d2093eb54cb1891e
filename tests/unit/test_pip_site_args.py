"""MLSTACK_PIP_ARGS: the site's pip arguments reach the bundle venvs mlstack builds."""

from __future__ import annotations

import pytest
from mlstack.lifecycle.venvs import pip_site_args


def test_shell_words_keep_a_quoted_path_with_spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSTACK_PIP_ARGS", "--no-index --find-links '/srv/my wheels'")
    assert pip_site_args() == ["--no-index", "--find-links", "/srv/my wheels"]


def test_unset_or_blank_adds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSTACK_PIP_ARGS", raising=False)
    assert pip_site_args() == []
    monkeypatch.setenv("MLSTACK_PIP_ARGS", "  ")
    assert pip_site_args() == []
