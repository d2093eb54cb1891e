"""Model lifecycle: train, promote, roll back and retrain bundles' models against the MLflow registry.

Standard library only (like the registry client): ``retrain_runner`` runs inside a bundle's own
virtualenv, next to the model's dependencies, and must not bring any of the CLI's.
"""


class LifecycleError(Exception):
    """A lifecycle step failed; the message is meant for the operator."""
