"""Evaluates and, when needed, retrains every model of a bundle's ``worker_retrain`` folder.

    python -m mlstack.lifecycle.retrain_runner WORKER_RETRAIN_DIR [--workdir DIR] [--result FILE]

Runs inside the retrain part's own virtualenv (its requirements + mlstack), as the
original stack's retrain script did: ``InitModels.init_models()`` instantiates the
``ModeloRETRAIN`` of each params.conf section; each model's production params, dataset
names and baseline are loaded, ``evaluate`` says whether to retrain and ``retrain``
logs a new run. Return types are checked as the original checks them. Nothing here
promotes a model or talks to the API.

The working directory (default: a new temporary one) links to the bundle's files and
receives what mllibprodest writes (``temp_area/``, model copies in ``$TMPDIR``).
--result FILE receives a JSON summary. Exit status 0: every model was evaluated
(retrained or not); 1: some model failed (the others were still handled); 2: bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

log = logging.getLogger("mlstack.retrain")


class StepFailed(Exception):
    pass


def _type_name(value: object) -> str:
    return type(value).__name__


def _expect_dict(value: object, function: str) -> dict:
    # `type(x) is dict`, not isinstance: the original refuses dict subclasses too.
    if type(value) is not dict:
        raise StepFailed(f"'{function}' must return 'dict', but returned '{_type_name(value)}'")
    return value


def _step(what: str, call: Any) -> Any:
    try:
        return call()
    except StepFailed:
        raise
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        log.debug("%s", traceback.format_exc())
        raise StepFailed(f"{what}: {exc.__class__.__name__}: {exc}") from None


def retrain_one(model: Any) -> dict[str, Any]:
    """The original runner's steps for one model; raises StepFailed with the reason."""
    name = _step("get_model_name()", model.get_model_name)
    provider = _step("get_model_provider_name()", model.get_model_provider_name)

    def production_parameters() -> tuple[Any, ...]:
        return (
            model.load_production_datasets_names(model_name=name, provider=provider),
            model.get_experiment_name(),
            model.get_dataset_provider_name(),
            model.load_production_baseline(model_name=name, provider=provider),
            model.load_production_params(model_name=name, provider=provider),
        )

    datasets_names, experiment, dataset_provider, baseline, params = _step(
        "cannot load the parameters of the production model", production_parameters
    )
    _expect_dict(datasets_names, "load_production_datasets_names")
    _expect_dict(baseline, "load_production_baseline")
    _expect_dict(params, "load_production_params")
    log.info("%s: evaluating on datasets %s", name, datasets_names)

    def evaluation() -> Any:
        loaded = model.load_model(model_name=name, provider=provider)
        datasets = model.load_datasets(datasets_filenames=datasets_names, provider=dataset_provider)
        return model.evaluate(
            model=loaded,
            datasets=datasets,
            baseline_metrics=baseline,
            training_params=params,
            artifacts_path="temp_area",
            batch_size=10000,
        )

    answer = _step("cannot evaluate the model", evaluation)
    if not (isinstance(answer, tuple) and len(answer) == 2):
        raise StepFailed(f"'evaluate' must return ('bool', 'dict'), but returned '{_type_name(answer)}'")
    needs_retrain, info = answer
    if type(needs_retrain) is not bool or type(info) is not dict:
        raise StepFailed(
            f"'evaluate' must return ('bool', 'dict'), but returned "
            f"('{_type_name(needs_retrain)}', '{_type_name(info)}')"
        )
    result: dict[str, Any] = {
        "provider": provider,
        "experiment": experiment,
        "retrain_needed": needs_retrain,
        "evaluation": info,
        "retrained": False,
    }
    if not needs_retrain:
        log.info("%s: no retrain needed: %s", name, info)
        return result

    log.info("%s: retrain needed: %s", name, info)

    def retraining() -> Any:
        # As the original: reloading is what frees the model loaded for the evaluation, and the
        # datasets are loaded again because the evaluation consumed their streams.
        model.load_model(model_name=name, provider=provider)
        datasets = model.load_datasets(datasets_filenames=datasets_names, provider=dataset_provider)
        return model.retrain(
            production_model_name=name,
            production_params=params,
            experiment_name=experiment,
            datasets=datasets,
            reasons=info,
        )

    result["retrain_result"] = _step("cannot retrain the model", retraining)
    result["retrained"] = True
    log.info("%s: retrained with the production parameters %s", name, params)
    return result


def _dedupe_log_handlers() -> None:
    """mllibprodest adds one console handler to its logger per module that imports it: keep one of each."""
    for logger in list(logging.root.manager.loggerDict.values()):
        if not isinstance(logger, logging.Logger) or len(logger.handlers) < 2:
            continue
        seen: set[tuple[Any, ...]] = set()
        kept = []
        for handler in logger.handlers:
            key = (type(handler), getattr(handler, "stream", None), getattr(handler, "baseFilename", None))
            if key not in seen:
                seen.add(key)
                kept.append(handler)
        logger.handlers = kept


def prepare(bundle: Path, workdir: Path) -> None:
    """Work in ``workdir`` (links to the bundle): mllibprodest reads ./params.conf and writes ./temp_area."""
    from mlstack.worker.bundle import prepare_workdir

    prepare_workdir(bundle, workdir)
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = str(tmp)
    # Without this, importing mllibprodest writes ./logs/ (and fails on a read-only directory).
    os.environ["STACK_LOG_OUTPUT"] = "console"
    os.chdir(workdir)
    sys.path.insert(0, str(workdir))


def run(bundle: Path, workdir: Path) -> dict[str, Any]:
    prepare(bundle, workdir)
    summary: dict[str, Any] = {"ok": True, "models": {}, "error": ""}
    try:
        from mllibprodest.initiators.model_initiator import InitModels

        models = InitModels.init_models()
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        summary.update(ok=False, error=f"cannot instantiate the models: {exc.__class__.__name__}: {exc}")
        return summary
    _dedupe_log_handlers()
    if not isinstance(models, dict) or not models:
        summary.update(ok=False, error="params.conf names no model")
        return summary
    for name, model in models.items():
        try:
            summary["models"][name] = {"ok": True, **retrain_one(model)}
        except StepFailed as exc:
            log.error("%s: %s", name, exc)
            summary["models"][name] = {"ok": False, "error": str(exc)}
            summary["ok"] = False
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlstack.lifecycle.retrain_runner", description="Evaluate and retrain a bundle's models."
    )
    parser.add_argument("bundle", type=Path, help="the bundle's worker_retrain folder (params.conf + models/)")
    parser.add_argument("--workdir", type=Path, help="writable working directory (default: a new temporary one)")
    parser.add_argument("--result", type=Path, help="write the JSON summary here")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("MLSTACK_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    bundle = args.bundle.resolve()
    if not (bundle / "params.conf").is_file():
        print(f"retrain_runner: {bundle} has no params.conf", file=sys.stderr)
        return 2
    result = args.result.resolve() if args.result else None  # before run() changes directory
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="mlstack-retrain-"))).resolve()
    summary = run(bundle, workdir)
    if result:
        result.write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    if summary["error"]:
        log.error("%s", summary["error"])
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
