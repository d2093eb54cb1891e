"""The /inference and /feedback parameter checks, in the contract's order (pure functions)."""

from __future__ import annotations

from typing import Any

from mlstack import messages
from mlstack.api.feedback import label_bytes


def _check_lists(values: dict[str, Any], params: tuple[str, ...]) -> str | None:
    for param in params:
        if param not in values:
            continue
        value = values[param]
        if not isinstance(value, list):
            return messages.wrong_param_type(param, type(value).__name__)
        if not value:
            return messages.empty_list(param)
        if len(value) > messages.MAX_ITEMS:
            return messages.too_many_items(len(value), param)
    return None


def inference_error(method: str, present: dict[str, Any]) -> str | None:
    """First failing check for an /inference request, or None.

    ``present`` holds only the keys the client actually sent (a JSON null is present, with None).
    """
    if method not in messages.INFERENCE_METHODS:
        return messages.wrong_method(method)
    if method in ("predict", "evaluate") and "features" not in present:
        return messages.missing_param("features", method)
    if method == "evaluate":
        if "targets" not in present:
            return messages.missing_param("targets", method)
        features, targets = present["features"], present["targets"]
        # The original compared lengths before types and crashed on null; a type error answers instead.
        if isinstance(features, list) and isinstance(targets, list) and len(features) != len(targets):
            return messages.length_mismatch(method)
    return _check_lists(present, ("features", "targets"))


def feedback_list_error(feedback: list[Any]) -> str | None:
    return _check_lists({"feedback": feedback}, ("feedback",))


def feedback_label_error(feedback: list[Any], max_bytes: int) -> str | None:
    """A label over the size cap (mlstack extension: labels end up in get_feedback's message)."""
    for position, label in enumerate(feedback):
        size = label_bytes(label)
        if size > max_bytes:
            return messages.feedback_label_too_large(position, size, max_bytes)
    return None


def json_type_name(value: Any) -> str:
    """Python type name of a JSON value, as the original reported it ('str', 'int', ...)."""
    return type(value).__name__


def feedback_mismatch(job_id: str, feedback: list[Any], predicted: list[Any]) -> str | None:
    if len(feedback) != len(predicted):
        return messages.feedback_count_mismatch(job_id)
    for position, (label, pred) in enumerate(zip(feedback, predicted, strict=True)):
        if json_type_name(label) != json_type_name(pred):
            return messages.feedback_type_mismatch(
                label, position, json_type_name(label), pred, json_type_name(pred), job_id
            )
    return None
