"""mlstack: a container-free ML serving stack."""

__version__ = "1.0.0"

# The mllibprodest release whose interfaces the worker runtime supports (reported by GET /version).
SUPPORTED_MLLIBPRODEST = "1.8.9"
