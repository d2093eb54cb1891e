"""The ``mlstack`` command-line tool for operators and model developers."""

from __future__ import annotations

import sys

import click

from mlstack import SUPPORTED_MLLIBPRODEST, __version__
from mlstack.settings import ApiSettings, SettingsError, WorkerSettings


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


if __name__ == "__main__":
    main()
