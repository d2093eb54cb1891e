"""The ``mlstack`` command-line tool for operators and model developers.

Registry commands read MLFLOW_TRACKING_URI / MLFLOW_TRACKING_USERNAME /
MLFLOW_TRACKING_PASSWORD (environment, then the registry env file, then the mlstack env
file: ``settings.registry_environment``). Failures end
with one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from mlstack import SUPPORTED_MLLIBPRODEST, __version__
from mlstack.health import health_command
from mlstack.lifecycle import LifecycleError
from mlstack.registry import RegistryAuthError, RegistryClient, RegistryError, RegistryUnreachable
from mlstack.settings import ApiSettings, SettingsError, WorkerSettings, merged_environment, registry_environment

F = TypeVar("F", bound=Callable[..., Any])

# Exit statuses of the registry commands (2 is click's usage error).
EXIT_FAILED = 1
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4


def fail(message: str, status: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"mlstack: {message}", err=True)
    sys.exit(status)


def friendly(func: F) -> F:
    """Turn expected failures into one line on stderr and an exit status."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RegistryUnreachable as exc:
            fail(str(exc), EXIT_UNREACHABLE)
        except RegistryAuthError as exc:
            fail(str(exc), EXIT_AUTH)
        except (RegistryError, LifecycleError) as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper  # type: ignore[return-value]


def registry_client() -> RegistryClient:
    return RegistryClient.from_env(registry_environment())


def say(message: str) -> None:
    click.echo(f"mlstack: {message}", err=True)


@click.group()
@click.version_option(__version__, message=f"mlstack %(version)s (mllibprodest=={SUPPORTED_MLLIBPRODEST})")
def main() -> None:
    """mlstack: publish machine-learning models behind an asynchronous HTTP API."""


@main.command("check-config")
@click.argument("role", type=click.Choice(["api", "worker"]))
def check_config(role: str) -> None:
    """Validate the settings a ROLE would start with (environment + env file); secrets are not shown."""
    loader = ApiSettings.from_env if role == "api" else WorkerSettings.from_env
    try:
        settings = loader()
    except SettingsError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    click.echo(f"{role} configuration ok: {settings!r}")


main.add_command(health_command)

_VENV_HELP = (
    "Virtualenv for the bundle part (made or updated from its requirements.txt + mlstack). "
    "Default: $MLSTACK_BUNDLE_VENV, else $MLSTACK_VENV_DIR/<bundle>-<digest of requirements.txt> with "
    "MLSTACK_VENV_DIR defaulting to ~/.cache/mlstack/venvs."
)
_BUNDLE = click.Path(exists=True, file_okay=False, path_type=Path)
_VENV = click.Path(file_okay=False, path_type=Path)


# ---- train ---------------------------------------------------------------------------------
@main.command("train", context_settings={"ignore_unknown_options": True})
@click.argument("bundle", type=_BUNDLE)
@click.option("--venv", "venv_dir", type=_VENV, envvar="MLSTACK_BUNDLE_VENV", help=_VENV_HELP)
@click.argument("train_args", nargs=-1, type=click.UNPROCESSED)
@friendly
def train_command(bundle: Path, venv_dir: Path | None, train_args: tuple[str, ...]) -> None:
    """Run BUNDLE's training_model/train.py in its own virtualenv; it logs to MLflow.

    Arguments after the bundle (after `--`) go to train.py."""
    from mlstack.lifecycle.bundle import part_dir
    from mlstack.lifecycle.train import now_ms, run_training, runs_since
    from mlstack.lifecycle.venvs import default_venv_dir, ensure_venv

    env = registry_environment()
    client = RegistryClient.from_env(env)
    client.check()  # fail before a long training when MLflow is not there or refuses us
    part = part_dir(bundle, "train")
    requirements = part / "requirements.txt"
    python = ensure_venv(venv_dir or default_venv_dir(bundle, requirements), requirements, say)
    started = now_ms()
    say(f"training {part / 'train.py'} with {python}")
    run_training(python, part, env, train_args)
    logged = runs_since(client, bundle, started)
    if not logged:
        fail(f"training finished but logged no run to the bundle's experiments in MLflow at {client.url}")
    for item in logged:
        line = f"logged run '{item.run.name}' {item.run.run_id} to experiment '{item.experiment}'"
        if item.versions:
            registered = ", ".join(f"{v.name} v{v.version}" for v in item.versions)
            line += f", registered as {registered} (promote with: mlstack models promote {item.versions[0].name})"
        click.echo(line)


# ---- retrain -------------------------------------------------------------------------------
@main.command("retrain")
@click.argument("bundle", type=_BUNDLE)
@click.option("--venv", "venv_dir", type=_VENV, envvar="MLSTACK_BUNDLE_VENV", help=_VENV_HELP)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Working directory of the retrain (temp_area/, temporary files). Default: a temporary one.",
)
@friendly
def retrain_command(bundle: Path, venv_dir: Path | None, workdir: Path | None) -> None:
    """Evaluate every model of BUNDLE's worker_retrain against its production baseline and retrain
    the ones that need it (run 'self_training'). Never promotes. Exit 0 when all were evaluated."""
    from mlstack.lifecycle import retrain as rt
    from mlstack.lifecycle.bundle import part_dir, read_sections
    from mlstack.lifecycle.venvs import default_venv_dir, ensure_venv

    env = registry_environment()
    part = part_dir(bundle, "retrain")
    sections = read_sections(part)
    client = None
    if any(s.provider == "mlflow" for s in sections):
        client = RegistryClient.from_env(env)
        for section in sections:
            if section.provider == "mlflow" and client.production_version(section.name) is None:
                client.get_model(section.name)  # a clear "not registered" first
                fail(f"model '{section.name}' has no production version to evaluate: promote one first")
    requirements = part / "requirements.txt"
    python = ensure_venv(venv_dir or default_venv_dir(bundle, requirements), requirements, say)
    outcomes = rt.retrain(python, part, sections, env, client, workdir.resolve() if workdir else None)
    for outcome in outcomes:
        click.echo(rt.describe(outcome))
    failed = [o.name for o in outcomes if not o.ok]
    if failed:
        fail(f"retrain failed for {', '.join(failed)}")


# ---- models --------------------------------------------------------------------------------
@main.group("models")
def models_group() -> None:
    """Registered models in MLflow: list, promote, roll back."""


@models_group.command("list")
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly
def models_list(names: tuple[str, ...], as_json: bool) -> None:
    """Every registered model (or NAMES): versions, which one is production, run ids, creation times."""
    from mlstack.lifecycle.catalog import describe, render

    models = describe(registry_client(), list(names) or None)
    click.echo(json.dumps({"models": models}, indent=2) if as_json else render(models))


@models_group.command("promote")
@click.argument("name")
@click.option("--run", "run_id", help="Promote the version made from this run (registered now if needed).")
@click.option("--version", "version", help="Promote this registered version.")
@click.option("--experiment", help="Where to look for the latest run (default: the experiment of NAME's versions).")
@friendly
def models_promote(name: str, run_id: str | None, version: str | None, experiment: str | None) -> None:
    """Move NAME's 'production' alias: to a version, a run, or by default the latest run of its experiment."""
    from mlstack.lifecycle.promote import promote

    if run_id and version:
        raise click.UsageError("--run and --version exclude each other")
    move = promote(registry_client(), name, run_id=run_id, version=version, experiment=experiment)
    if move.registered_now:
        click.echo(f"registered run {move.version.run_id} as {name} v{move.version.version}")
    if move.changed:
        was = f"v{move.previous}" if move.previous else "none"
        click.echo(f"{name}: production is now v{move.version.version} (was {was})")
    else:
        click.echo(f"{name}: v{move.version.version} already is production")


@models_group.command("rollback")
@click.argument("name")
@friendly
def models_rollback(name: str) -> None:
    """Move NAME's 'production' alias back to the version that was production before."""
    from mlstack.lifecycle.promote import rollback

    move = rollback(registry_client(), name)
    click.echo(f"{name}: production is now v{move.version.version} (rolled back from v{move.previous})")


def _json_list(_ctx: click.Context, _param: click.Parameter, value: str) -> list[Any]:
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(parsed, list) or not parsed:
        raise click.BadParameter("must be a non-empty JSON list")
    return parsed


@main.command("stress")
@click.option("--url", required=True, help="Base URL of the mlstack API; nothing else is contacted, no redirects.")
@click.option("--model", default="CLF_IRIS", show_default=True, help="Model to load.")
@click.option("--features", default='["5.1;3.5;1.4;0.2", "6.7;3.0;5.2;2.3"]', callback=_json_list,
              show_default=True, help="JSON list sent as features (predict, evaluate).")
@click.option("--targets", default='["setosa", "virginica"]', callback=_json_list, show_default=True,
              help="JSON list sent as targets (evaluate).")
@click.option("--rounds", type=click.IntRange(1, 1_000_000), default=20, show_default=True, help="At most this many.")
@click.option("--duration", type=click.FloatRange(0.1, 86_400), default=60.0, show_default=True,
              help="Start no round after this many seconds.")
@click.option("--rate", type=click.FloatRange(0.01, 10_000), default=2.0, show_default=True, help="Rounds per second.")
@click.option("--delay", type=click.FloatRange(0, 3600), default=None,
              help="Instead of --rate: one round at a time, this many seconds between rounds.")
@click.option("--queue-limit", type=click.FloatRange(0.1, 3600), default=5.0, show_default=True,
              help="A job still Queued after this many seconds is an overload.")
@click.option("--job-timeout", type=click.FloatRange(1, 86_400), default=60.0, show_default=True,
              help="Stop following a job after this many seconds.")
@click.option("--max-in-flight", type=click.IntRange(1, 10_000), default=64, show_default=True,
              help="At most this many rounds at once.")
@click.option("--get-feedback/--no-get-feedback", default=True, show_default=True,
              help="Ask get_feedback whenever its rate limit allows.")
@click.option("--json", "as_json", is_flag=True, help="Print the final report as JSON (no live display).")
def stress_command(url: str, model: str, features: list[Any], targets: list[Any], rounds: int, duration: float,
                   rate: float, delay: float | None, queue_limit: float, job_timeout: float, max_in_flight: int,
                   get_feedback: bool, as_json: bool) -> None:  # fmt: skip
    """Load an mlstack API with rounds of predict, evaluate, info, status and feedback (get_feedback
    within its limit) and report rates, latencies, overloads and recovery.

    The client token comes from MLSTACK_API_TOKEN (environment or the mlstack env file), never
    from the command line.
    """
    import asyncio

    from mlstack import stress

    token = merged_environment().get("MLSTACK_API_TOKEN", "").strip()
    if not token:
        fail("MLSTACK_API_TOKEN is not set: the client token of the API under test")
    try:
        config = stress.StressConfig(
            url=stress.check_url(url), token=token, model=model, features=features, targets=targets,
            rounds=rounds, duration_s=duration, rate=None if delay is not None else rate, delay_s=delay or 0.0,
            queue_limit_s=queue_limit, job_timeout_s=job_timeout, max_in_flight=max_in_flight,
            get_feedback=get_feedback,
        )  # fmt: skip
        if as_json:
            data = asyncio.run(stress.Runner(config).run())
            click.echo(json.dumps(data, indent=2, ensure_ascii=False))
            return
        from rich.console import Console
        from rich.live import Live

        console = Console(stderr=True)
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            runner = stress.Runner(config, on_tick=lambda s: live.update(stress.live_table(s, config)))
            data = asyncio.run(runner.run())
        Console().print(stress.report_table(data))
    except stress.StressError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)


if __name__ == "__main__":
    main()
