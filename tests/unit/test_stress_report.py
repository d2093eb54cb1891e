"""mlstack stress: which URLs it accepts, and how its report adds up."""

from __future__ import annotations

import pytest
from mlstack import stress


@pytest.mark.parametrize(
    ("url", "normalised"),
    [("http://127.0.0.1:8000", "http://127.0.0.1:8000"), ("https://api.example.org/ml/", "https://api.example.org/ml")],
)
def test_accepted_urls(url: str, normalised: str) -> None:
    assert stress.check_url(url) == normalised


@pytest.mark.parametrize(
    "url", ["ftp://h/", "http://", "http://u:p@h/", "http://h/?a=1", "http://h/#x", "file:///etc/passwd", "h:80"]
)
def test_refused_urls(url: str) -> None:
    with pytest.raises(stress.StressError):
        stress.check_url(url)


def test_percentile() -> None:
    assert stress.percentile([], 0.95) is None
    assert stress.percentile([0.2, 0.1], 0.5) == 0.1
    assert stress.percentile([float(i) for i in range(1, 21)], 0.95) == 19.0


def test_report_adds_up() -> None:
    config = stress.StressConfig(url="http://h", token="t", model="M", features=["a"], targets=["a"])
    stats = stress.Stats()
    stats.requests.update({"inference": 3, "status": 5})
    stats.jobs.update({"accepted": 3, "Done": 2, "Error": 1})
    stats.latencies["inference"] += [0.01, 0.02, 0.03]
    stats.submit_end, stats.drained = 10.0, 12.5
    data = stress.report(stats, config)
    assert data["requests"]["total"] == 8
    assert data["http_latency"]["inference"] == {"count": 3, "p50_ms": 20.0, "p95_ms": 30.0, "max_ms": 30.0}
    assert data["recovery_s"] == 2.5
    assert "token=" not in repr(config)
