"""Typed settings, parsed once from the environment (and an optional env file).

Every process calls one ``*.from_env()`` at start; a missing or bad value raises
``SettingsError`` listing *all* problems, so an operator fixes them in one go.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

DEFAULT_ENV_FILE = "/etc/mlstack/mlstack.env"
WORKER_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
# A model's name becomes its queue's name (an AMQP shortstr): checked on /worker/register.
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")

T = TypeVar("T")


class SettingsError(Exception):
    """Raised with every configuration problem found, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a systemd-style EnvironmentFile (KEY=VALUE, # comments, optional quotes)."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def merged_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Env file values overlaid by the real environment (the environment wins)."""
    env = dict(os.environ if environ is None else environ)
    env_file = Path(env.get("MLSTACK_ENV_FILE", DEFAULT_ENV_FILE))
    merged: dict[str, str] = {}
    if env_file.is_file():
        merged.update(read_env_file(env_file))
    merged.update(env)
    return merged


# Deployed, the registry's writer credentials live in retrain.env (0600) on the first workers host,
# next to the mlstack env file; the API's env file holds none (README.md, "Who can do what").
REGISTRY_ENV_FILE_NAME = "retrain.env"


def registry_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the CLI's registry commands read: the mlstack env file, then the registry env file
    (MLSTACK_REGISTRY_ENV_FILE, default retrain.env beside MLSTACK_ENV_FILE) when this user may
    read it, then the real environment (it wins)."""
    env = dict(os.environ if environ is None else environ)
    env_file = Path(env.get("MLSTACK_ENV_FILE", DEFAULT_ENV_FILE))
    registry_file = Path(env.get("MLSTACK_REGISTRY_ENV_FILE", str(env_file.parent / REGISTRY_ENV_FILE_NAME)))
    merged: dict[str, str] = {}
    for path in (env_file, registry_file):
        if path.is_file() and os.access(path, os.R_OK):
            merged.update(read_env_file(path))
    merged.update(env)
    return merged


class _Reader:
    """Reads typed values and collects problems instead of failing on the first one."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def text(self, name: str, default: str | None = None, *, secret: bool = False) -> str:
        value = self.env.get(name, "").strip()
        if value:
            return value
        if default is None:
            kind = "secret" if secret else "setting"
            self.problems.append(f"{name}: required {kind} is missing")
            return ""
        return default

    def number(self, name: str, default: T, convert: Callable[[str], T], minimum: float) -> T:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = convert(raw)
        except ValueError:
            self.problems.append(f"{name}: {raw!r} is not a valid {convert.__name__}")
            return default
        if value < minimum:  # type: ignore[operator]
            self.problems.append(f"{name}: must be at least {minimum}, got {raw}")
            return default
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        self.problems.append(f"{name}: {raw!r} is not one of true/false/1/0/yes/no/on/off")
        return default

    def url(self, name: str, default: str | None, schemes: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value and not value.startswith(tuple(f"{s}://" for s in schemes)):
            self.problems.append(f"{name}: must start with one of {', '.join(s + '://' for s in schemes)}")
        return value

    def urls(self, name: str, default: str, schemes: tuple[str, ...]) -> tuple[str, ...]:
        """One URL per cluster node, comma-separated; all must name the same user and vhost.
        Problems name the entry by position, never its text (it holds a password)."""
        entries = [e.strip() for e in self.text(name, default).split(",")]
        prefixes = tuple(f"{s}://" for s in schemes)
        identities: set[tuple[str, str]] = set()
        for number, entry in enumerate(entries, 1):
            where = f"{name}: URL {number} of {len(entries)}"
            if not entry:
                self.problems.append(f"{where} is empty (URLs are separated by single commas)")
                continue
            if not entry.startswith(prefixes):
                self.problems.append(f"{where} must start with one of {', '.join(prefixes)}")
                continue
            parts = urlsplit(entry)
            try:
                _ = parts.port  # raises on a port that is not a number
            except ValueError:
                self.problems.append(f"{where} has a port that is not a number from 0 to 65535")
                continue
            if not parts.hostname:
                self.problems.append(f"{where} names no host")
                continue
            identities.add((parts.username or "", parts.path))
        if len(identities) > 1:
            self.problems.append(f"{name}: every URL must name the same user and vhost (one URL per node)")
        return tuple(entries)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default).lower()
        if value not in choices:
            self.problems.append(f"{name}: {value[:40]!r} is not one of {', '.join(choices)}")
            return default
        return value

    def finish(self) -> None:
        if self.problems:
            raise SettingsError(self.problems)


DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
QUEUE_TYPES = ("classic", "quorum")


@dataclass(frozen=True)
class BrokerSettings:
    # One URL per RabbitMQ node (MLSTACK_AMQP_URL, comma-separated): clients fail over between them.
    amqp_urls: tuple[str, ...] = field(repr=False)
    # Seconds to wait for a publisher confirm before telling the client the broker failed.
    confirm_timeout_s: float = 5.0
    # x-max-length of every model queue; the API and the workers must use the same value.
    queue_max_length: int = 10_000
    # `quorum` on a cluster of 3+ nodes (replicated queues); API and workers must agree.
    queue_type: str = "classic"

    @classmethod
    def read(cls, r: _Reader, *, confirm_timeout: bool) -> BrokerSettings:
        return cls(
            amqp_urls=r.urls("MLSTACK_AMQP_URL", DEFAULT_AMQP_URL, ("amqp", "amqps")),
            confirm_timeout_s=r.number("MLSTACK_BROKER_CONFIRM_TIMEOUT_S", 5.0, float, 0.1) if confirm_timeout else 5.0,
            queue_max_length=r.number("MLSTACK_QUEUE_MAX_LENGTH", 10_000, int, 1),
            queue_type=r.choice("MLSTACK_QUEUE_TYPE", "classic", QUEUE_TYPES),
        )


@dataclass(frozen=True)
class RegistrySettings:
    """MLflow tracking server; same variable names as mlflow and mllibprodest use."""

    url: str
    username: str = field(repr=False)
    password: str = field(repr=False)

    @classmethod
    def optional(cls, r: _Reader) -> RegistrySettings | None:
        if not r.env.get("MLFLOW_TRACKING_URI", "").strip():
            return None
        return cls(
            url=r.url("MLFLOW_TRACKING_URI", None, ("http", "https")).rstrip("/"),
            username=r.text("MLFLOW_TRACKING_USERNAME", ""),
            password=r.text("MLFLOW_TRACKING_PASSWORD", ""),
        )


@dataclass(frozen=True)
class ApiSettings:
    api_token: str = field(repr=False)
    worker_token: str = field(repr=False)
    mongodb_uri: str = field(repr=False)
    mongodb_db: str
    broker: BrokerSettings = field(repr=False)
    job_ttl_ms: int
    feedback_model_interval_s: float
    feedback_global_interval_s: float
    max_body_bytes: int
    log_level: str
    queue_full_retry_after_s: int = 5
    job_retention_days: int = 120
    job_purge_interval_s: float = 3600.0
    feedback_max_label_bytes: int = 4096
    feedback_max_message_bytes: int = 8 * 1024 * 1024
    # gunicorn (read by services/mlstack/api/gunicorn_conf.py)
    bind: str = "127.0.0.1:8000"
    api_workers: int = 2
    access_log: str = ""
    # Prometheus (services/mlstack/metrics.py): where gunicorn's processes keep their figures,
    # and whether /metrics answers clients other than loopback without a token.
    metrics_dir: str = ""
    metrics_public: bool = False
    # HTTPS (gunicorn's own TLS): the host's certificate and key, both or neither.
    tls_cert_file: str = ""
    tls_key_file: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiSettings:
        r = _Reader(merged_environment(environ))
        api_token = r.text("MLSTACK_API_TOKEN", secret=True)
        worker_token = r.text("MLSTACK_WORKER_TOKEN", secret=True)
        if api_token and api_token == worker_token:
            r.problems.append("MLSTACK_WORKER_TOKEN: must differ from MLSTACK_API_TOKEN")
        settings = cls(
            api_token=api_token,
            worker_token=worker_token,
            mongodb_uri=r.url("MLSTACK_MONGODB_URI", "mongodb://127.0.0.1:27017", ("mongodb", "mongodb+srv")),
            mongodb_db=r.text("MLSTACK_MONGODB_DB", "ml_api_db"),
            broker=BrokerSettings.read(r, confirm_timeout=True),
            job_ttl_ms=r.number("MLSTACK_JOB_TTL_MS", 90_000, int, 1),
            feedback_model_interval_s=r.number("MLSTACK_FEEDBACK_MODEL_INTERVAL_S", 1800.0, float, 0),
            feedback_global_interval_s=r.number("MLSTACK_FEEDBACK_GLOBAL_INTERVAL_S", 120.0, float, 0),
            max_body_bytes=r.number("MLSTACK_MAX_BODY_BYTES", 1024 * 1024, int, 1024),
            log_level=r.text("MLSTACK_LOG_LEVEL", "INFO").upper(),
            queue_full_retry_after_s=r.number("MLSTACK_QUEUE_FULL_RETRY_AFTER_S", 5, int, 1),
            # get_feedback looks back at most 90 days; jobs must outlive that span.
            job_retention_days=r.number("MLSTACK_JOB_RETENTION_DAYS", 120, int, 91),
            job_purge_interval_s=r.number("MLSTACK_JOB_PURGE_INTERVAL_S", 3600.0, float, 0.5),
            feedback_max_label_bytes=r.number("MLSTACK_FEEDBACK_MAX_LABEL_BYTES", 4096, int, 16),
            # Under MongoDB's 16 MiB document limit (the job stores the distinct labels) and the broker's.
            feedback_max_message_bytes=r.number("MLSTACK_FEEDBACK_MAX_MESSAGE_BYTES", 8 * 1024 * 1024, int, 1024),
            bind=r.text("MLSTACK_BIND", "127.0.0.1:8000"),
            api_workers=r.number("MLSTACK_API_WORKERS", 2, int, 1),
            access_log=r.text("MLSTACK_ACCESS_LOG", ""),
            metrics_dir=r.text("MLSTACK_METRICS_DIR", ""),
            metrics_public=r.flag("MLSTACK_METRICS_PUBLIC", False),
            tls_cert_file=r.text("MLSTACK_TLS_CERT_FILE", ""),
            tls_key_file=r.text("MLSTACK_TLS_KEY_FILE", ""),
        )
        if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
            r.problems.append("MLSTACK_TLS_CERT_FILE and MLSTACK_TLS_KEY_FILE: set both for HTTPS, or neither")
        r.finish()
        return settings


@dataclass(frozen=True)
class WorkerSettings:
    api_url: str
    worker_token: str = field(repr=False)
    broker: BrokerSettings = field(repr=False)
    bundle_dir: Path
    worker_id: str
    state_dir: Path
    prefetch: int
    heartbeat_interval_s: float
    result_retry_s: float
    version_check_s: float
    registry: RegistrySettings | None
    systemd_unit: str
    log_level: str
    # Failure handling (services/DESIGN.md, "Worker failure handling").
    max_attempts: int = 5
    lease_s: float = 30.0
    model_time_limit_s: float = 60.0
    model_grace_s: float = 30.0
    # Micro-batching defaults (a model's params.conf max_batch / max_wait_ms override them); 1 = off.
    max_batch: int = 1
    max_wait_ms: float = 2.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        r = _Reader(merged_environment(environ))
        worker_id = r.text("MLSTACK_WORKER_ID", f"{socket.gethostname()}-{os.getpid()}")
        worker_id = re.sub(r"[^A-Za-z0-9_-]", "_", worker_id) if "MLSTACK_WORKER_ID" not in r.env else worker_id
        if not WORKER_ID_PATTERN.match(worker_id):
            r.problems.append("MLSTACK_WORKER_ID: use 1-100 characters from [A-Za-z0-9_-]")
        bundle_dir = Path(r.text("MLSTACK_BUNDLE_DIR")).expanduser()
        if r.env.get("MLSTACK_BUNDLE_DIR") and not (bundle_dir / "params.conf").is_file():
            r.problems.append(f"MLSTACK_BUNDLE_DIR: {bundle_dir} has no params.conf")
        state_dir = Path(r.text("MLSTACK_STATE_DIR", str(Path(".mlstack-worker") / worker_id))).expanduser()
        settings = cls(
            api_url=r.url("MLSTACK_API_URL", None, ("http", "https")).rstrip("/"),
            worker_token=r.text("MLSTACK_WORKER_TOKEN", secret=True),
            broker=BrokerSettings.read(r, confirm_timeout=False),
            bundle_dir=bundle_dir.resolve(),
            worker_id=worker_id,
            state_dir=state_dir.resolve(),
            prefetch=r.number("MLSTACK_PREFETCH", 1, int, 1),
            heartbeat_interval_s=r.number("MLSTACK_HEARTBEAT_INTERVAL_S", 15.0, float, 0.5),
            result_retry_s=r.number("MLSTACK_RESULT_RETRY_S", 120.0, float, 1),
            version_check_s=r.number("MLSTACK_VERSION_CHECK_S", 60.0, float, 0.2),
            registry=RegistrySettings.optional(r),
            systemd_unit=r.text("MLSTACK_SYSTEMD_UNIT", ""),
            log_level=r.text("MLSTACK_LOG_LEVEL", "INFO").upper(),
            max_attempts=r.number("MLSTACK_MAX_ATTEMPTS", 5, int, 1),
            lease_s=r.number("MLSTACK_JOB_LEASE_S", 30.0, float, 3),
            model_time_limit_s=r.number("MLSTACK_MODEL_TIME_LIMIT_S", 60.0, float, 0.1),
            model_grace_s=r.number("MLSTACK_MODEL_GRACE_S", 30.0, float, 0),
            max_batch=r.number("MLSTACK_MAX_BATCH", 1, int, 1),
            max_wait_ms=r.number("MLSTACK_MAX_WAIT_MS", 2.0, float, 0),
        )
        r.finish()
        return settings


# The only units `mlstack health --restart-stale` may restart: Pub worker instances, named by the
# operator's configuration (never by a file a worker writes).
WORKER_UNIT_PATTERN = re.compile(r"^mlstack-worker-pub@[A-Za-z0-9_.-]+\.service$")


@dataclass(frozen=True)
class HealthSettings:
    state_root: Path
    worker_units: tuple[str, ...]
    max_restarts: int
    systemctl: str
    stale_grace_s: float
    dead_after_s: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HealthSettings:
        r = _Reader(merged_environment(environ))
        units: list[str] = []
        for unit in r.env.get("MLSTACK_HEALTH_WORKER_UNITS", "").split():
            if not WORKER_UNIT_PATTERN.match(unit):
                r.problems.append(
                    f"MLSTACK_HEALTH_WORKER_UNITS: {unit[:80]!r} is not a Pub worker unit"
                    " (mlstack-worker-pub@<instance>.service, instance from [A-Za-z0-9_.-])"
                )
            elif unit not in units:
                units.append(unit)
        settings = cls(
            state_root=Path(r.text("MLSTACK_WORKERS_STATE_ROOT", "/var/lib/mlstack/workers")).expanduser(),
            worker_units=tuple(units),
            max_restarts=r.number("MLSTACK_HEALTH_MAX_RESTARTS", 2, int, 0),
            systemctl=r.text("MLSTACK_HEALTH_SYSTEMCTL", "systemctl"),
            stale_grace_s=r.number("MLSTACK_HEALTH_STALE_GRACE_S", 300.0, float, 1),
            dead_after_s=r.number("MLSTACK_HEALTH_DEAD_AFTER_S", 90.0, float, 1),
        )
        r.finish()
        return settings
