"""The default configuration answers the contract's exact texts (no stack needed: pure message builders)."""

from mlstack import messages
from mlstack.settings import ApiSettings
from support import contract as c


def test_default_global_interval_text_is_the_contracts() -> None:
    defaults = ApiSettings.from_env({"MLSTACK_API_TOKEN": "a", "MLSTACK_WORKER_TOKEN": "b", "MLSTACK_ENV_FILE": "/x"})
    assert defaults.feedback_global_interval_s == 120
    text = messages.global_interval_not_respected("dia 01/01/2026 a partir das 10:00:00 hs", 120)
    assert text == c.GLOBAL_LIMIT_PREFIX + "dia 01/01/2026 a partir das 10:00:00 hs"


def test_default_job_ttl_is_90000_ms() -> None:
    defaults = ApiSettings.from_env({"MLSTACK_API_TOKEN": "a", "MLSTACK_WORKER_TOKEN": "b", "MLSTACK_ENV_FILE": "/x"})
    assert defaults.job_ttl_ms == 90_000
    assert messages.job_expired(defaults.job_ttl_ms) == "Job expirou após 90000 ms sem ser processado."
