"""Helpers of the services test suite: real processes, a contract-level client."""
