"""The last model instance each model loaded successfully, kept on disk in the worker's state dir.

A worker that cannot load production at start (registry down, broken version) serves this copy
instead of exiting. The copy is a pickle of the loaded model object, written atomically after every
successful load; the file lives in the worker's own state directory (mode 0600), so unpickling it
trusts nothing beyond the bundle code the worker already runs. A model whose object cannot be
pickled has no copy: an older one is removed, so the fallback is never a version the worker has
since replaced.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class LastGood:
    model: Any
    version: str
    saved_at: float


class LastGoodStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, name: str) -> Path:
        return self.directory / f"{_UNSAFE.sub('_', name)}.pickle"

    def save(self, name: str, model: Any, version: str) -> bool:
        """Keep ``model`` as ``name``'s fallback; False (and no fallback at all) when it cannot be kept."""
        document = {"format": FORMAT, "name": name, "version": version, "saved_at": time.time(), "model": model}
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)  # mode 0600
        except OSError as exc:
            log.error("model %s: could not keep v%s as last-good copy: %s", name, version, exc)
            return False
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(document, f, protocol=pickle.HIGHEST_PROTOCOL)  # streamed: no second copy in memory
                f.flush()
                os.fsync(f.fileno())
                size = f.tell()
            os.replace(tmp, self.path(name))  # atomic: a crash leaves the old copy or the new one
        except OSError as exc:
            log.error("model %s: could not keep v%s as last-good copy: %s", name, version, exc)
            return False
        except Exception as exc:  # any bundle object: pickling may raise anything
            self.path(name).unlink(missing_ok=True)
            log.error(
                "model %s: v%s cannot be pickled (%s: %s); no last-good copy, so this worker cannot start "
                "while the registry or production is broken",
                name,
                version,
                exc.__class__.__name__,
                exc,
            )
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)
        log.info("model %s: v%s kept as last-good copy (%d bytes)", name, version, size)
        return True

    def load(self, name: str) -> LastGood | None:
        """The kept copy of ``name``, or None (logged) when there is none usable."""
        path = self.path(name)
        try:
            with path.open("rb") as f:
                document = pickle.load(f)  # our own file in our own state dir: see the module docstring
        except FileNotFoundError:
            log.error("model %s: no last-good copy in %s", name, self.directory)
            return None
        except Exception as exc:
            log.error("model %s: the last-good copy %s cannot be read: %s: %s", name, path, exc.__class__.__name__, exc)
            return None
        if not isinstance(document, dict) or document.get("format") != FORMAT or document.get("name") != name:
            log.error("model %s: %s is not a last-good copy of this model", name, path)
            return None
        return LastGood(document["model"], str(document.get("version", "")), float(document.get("saved_at", 0)))
