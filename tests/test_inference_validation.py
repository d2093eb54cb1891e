"""POST /inference checks, in the contract's order (the first failing check answers)."""

from __future__ import annotations

import itertools

import pytest
from support import contract as c
from support.client import ApiClient
from support.stack import Stack

ABSENT = object()
F101 = [f"f{i}" for i in range(101)]
E = "TEST_ECHO"


@pytest.fixture(scope="module")
def api(main_stack: Stack) -> ApiClient:
    return main_stack.client()


def _body(model: str, method: object, features: object = ABSENT, targets: object = ABSENT, **extra: object) -> dict:
    body: dict = {"model_name": model, "method": method, **extra}
    if features is not ABSENT:
        body["features"] = features
    if targets is not ABSENT:
        body["targets"] = targets
    return body


@pytest.mark.parametrize(
    "method", ["predict", "evaluate", "info", "metodo_errado"], ids=["predict", "evaluate", "info", "bad-method"]
)
def test_unknown_model_answers_first(api: ApiClient, method: str) -> None:
    # Even a wrong method and missing features lose to "model not found".
    answer = api.call("/inference", _body("COLE_AQUI_O_NOME_DO_MODELO", method))
    assert answer == c.model_error("COLE_AQUI_O_NOME_DO_MODELO", method, c.MODEL_NOT_FOUND)


CASES = [
    # method check comes before the features/targets checks
    ("bad-method", _body(E, "info_errado"), c.wrong_method("info_errado")),
    ("case-sensitive", _body(E, "Predict", ["a"]), c.wrong_method("Predict")),
    ("bad-method-before-empty", _body(E, "x", []), c.wrong_method("x")),
    # features missing
    ("predict-no-features", _body(E, "predict"), c.missing("features", "predict")),
    ("predict-misspelt", _body(E, "predict", features_errado=["a"]), c.missing("features", "predict")),
    ("evaluate-no-features", _body(E, "evaluate", targets=["a"]), c.missing("features", "evaluate")),
    ("evaluate-nothing", _body(E, "evaluate"), c.missing("features", "evaluate")),
    ("evaluate-misspelt", _body(E, "evaluate", targets=[1], features_errado=[1]), c.missing("features", "evaluate")),
    # targets missing
    ("evaluate-no-targets", _body(E, "evaluate", ["a"]), c.missing("targets", "evaluate")),
    ("evaluate-misspelt-t", _body(E, "evaluate", ["a"], targets_errado=["a"]), c.missing("targets", "evaluate")),
    # length mismatch comes before the empty-list check
    ("evaluate-mismatch", _body(E, "evaluate", ["a", "b"], ["a"]), c.LENGTH_MISMATCH),
    ("evaluate-empty-features-vs-targets", _body(E, "evaluate", [], ["a"]), c.LENGTH_MISMATCH),
    ("evaluate-features-vs-empty-targets", _body(E, "evaluate", ["a"], []), c.LENGTH_MISMATCH),
    # empty lists, features before targets
    ("evaluate-both-empty", _body(E, "evaluate", [], []), c.empty_list("features")),
    ("predict-empty", _body(E, "predict", []), c.empty_list("features")),
    ("predict-empty-targets", _body(E, "predict", ["a"], []), c.empty_list("targets")),
    ("info-empty-features", _body(E, "info", []), c.empty_list("features")),
    # more than 100 items
    ("predict-101", _body(E, "predict", F101), c.too_many(101, "features")),
    ("evaluate-101", _body(E, "evaluate", F101, F101), c.too_many(101, "features")),
    ("predict-101-targets", _body(E, "predict", ["a"], F101), c.too_many(101, "targets")),
    ("predict-250", _body(E, "predict", F101 + F101 + F101[:48]), c.too_many(250, "features")),
    # JSON null
    ("predict-null-features", _body(E, "predict", None), c.none_type("features")),
    ("predict-null-targets", _body(E, "predict", ["a"], None), c.none_type("targets")),
    ("info-null-features", _body(E, "info", None), c.none_type("features")),
    ("evaluate-null-features", _body(E, "evaluate", None, ["a"]), c.none_type("features")),
]  # fmt: skip


@pytest.mark.parametrize(("body", "message"), [(b, m) for _, b, m in CASES], ids=[i for i, _, _ in CASES])
def test_inference_checks(api: ApiClient, body: dict, message: str) -> None:
    assert api.call("/inference", body) == c.error(message)


def test_boundary_100_items_and_extra_keys_are_accepted(api: ApiClient) -> None:
    features = [f"item-{i}" for i in range(100)]
    answer = api.call("/inference", _body(E, "predict", features, chave_extra={"x": 1}))
    job_id = answer.get("job_id", "")
    assert answer == {"job_id": job_id, "model_name": "TEST_ECHO", "method": "predict", "status": "Queued"}
    done = api.wait_done(job_id)
    assert done["status"] == "Done", done
    assert done["response"] == features


def test_evaluate_with_100_items_is_accepted(api: ApiClient) -> None:
    features = [f"x{i}" for i in range(100)]
    targets = [f"x{i}" if i % 2 else "other" for i in range(100)]
    done = api.run("TEST_ECHO", "evaluate", features, targets)
    assert done["status"] == "Done", done
    assert done["response"] == {"Accuracy": "50.00%", "n": 100}


def test_job_ids_are_unique_and_unguessable(api: ApiClient) -> None:
    ids = [api.submit("TEST_ECHO", "info") for _ in range(20)]
    assert len(set(ids)) == len(ids)
    # 64 hex chars each (checked by submit); not sequential: no shared 16-char prefix between consecutive ids
    assert all(a[:16] != b[:16] for a, b in itertools.pairwise(ids)), ids
