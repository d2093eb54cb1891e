"""Round trips through the API with the project's example model (CLF_IRIS), whose
worker runs in the bundle's own venv (MLSTACK_BUNDLE_PYTHON)."""

from __future__ import annotations

import subprocess
from datetime import date, timedelta

import httpx
from support import contract as c
from support.stack import Stack

LABELS = {"setosa", "versicolor", "virginica"}
FEATURES = ["5.1;3.5;1.4;0.2", "6.7;3.0;5.2;2.3", "5.9;3.0;4.2;1.5"]
TARGETS = ["setosa", "virginica", "versicolor"]


def test_version_names_the_mllibprodest_of_the_model_runtime(example_worker: Stack, bundle_python: str) -> None:
    installed = subprocess.run(
        [bundle_python, "-c", "import importlib.metadata as m; print(m.version('mllibprodest'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    body = httpx.get(f"{example_worker.apis[0].url}/version").json()
    assert body["Stack Version"].endswith(f" (mllibprodest=={installed})"), (body, installed)


def _predict_jobs_done(stack: Stack, model_name: str) -> int:
    with stack.jobs_collection() as jobs:
        return jobs.count_documents({"model_name": model_name, "method": "predict", "status": "Done"})


def test_example_model_round_trip(example_worker: Stack) -> None:
    api = example_worker.client()

    pred = api.run("CLF_IRIS", "predict", FEATURES, timeout=60)
    assert pred["status"] == "Done", pred
    assert set(pred) == c.PREDICT_STATUS_KEYS
    assert isinstance(pred["response"], list) and len(pred["response"]) == 3, pred
    assert set(pred["response"]) <= LABELS, pred
    assert pred["response"][:2] == ["setosa", "virginica"], pred  # unambiguous iris samples
    version = pred["model_version"]
    assert isinstance(version, str) and version, pred

    ev = api.run("CLF_IRIS", "evaluate", FEATURES, TARGETS, timeout=60)
    assert ev["status"] == "Done", ev
    assert isinstance(ev["response"], dict) and ev["response"], ev
    assert ev["model_version"] == version

    info = api.run("CLF_IRIS", "info", timeout=60)
    assert info["status"] == "Done", info
    assert isinstance(info["response"], dict) and info["response"], info
    assert info["model_version"] == version

    feedback = ["setosa", "virginica", "virginica"]
    assert api.feedback(pred["job_id"], feedback) == c.FEEDBACK_OK
    st = api.status(pred["job_id"])
    assert st["feedback"] == feedback and st["has_feedback"] is True, st

    start = (date.today() - timedelta(days=1)).strftime("%d/%m/%Y")
    end = (date.today() + timedelta(days=1)).strftime("%d/%m/%Y")
    # Other tests on this stack (e.g. the dashboard's) may have run CLF_IRIS predict jobs too.
    predict_done = _predict_jobs_done(example_worker, "CLF_IRIS")
    answer = api.get_feedback("CLF_IRIS", start, end)
    assert answer.get("status") == "Queued", answer
    gf = api.wait_done(answer["job_id"], timeout=60)
    assert gf["status"] == "Done", gf
    assert set(gf) == c.GET_FEEDBACK_STATUS_KEYS, gf
    assert gf["model_version"] == version
    assert isinstance(gf["response"]["model_metrics"], dict) and gf["response"]["model_metrics"], gf
    assert gf["response"]["api_metrics"] == {
        "feedback_labels_types": ["setosa", "virginica"],
        "qty_computed_labels": 3,
        "total_jobs_predict_done": predict_done,
        "total_jobs_has_feedback": 1,
        "total_jobs_computed_feedback": 1,
        "additional_info": c.additional_info(predict_done, 1),
    }
