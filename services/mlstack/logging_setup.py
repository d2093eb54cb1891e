"""One logging format for every mlstack process (journald adds the time)."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level, logging.INFO),
        format="%(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # pika and pymongo are chatty at INFO; their warnings still show.
    for noisy in ("pika", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
