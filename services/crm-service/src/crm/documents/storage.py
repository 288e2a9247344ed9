"""Where document bytes live: a directory (from settings), one file per document, named by
its id. Uploads land in `.incoming/` and are renamed into place, so a half-written file is
never served."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path


class DocumentStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def new_incoming(self) -> Path:
        incoming = self.root / ".incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        return incoming / uuid.uuid4().hex

    @staticmethod
    def relative_path(document_id: uuid.UUID) -> str:
        return f"{document_id.hex[:2]}/{document_id.hex}"

    def absolute(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if self.root not in path.parents:
            raise ValueError(f"{relative!r} is outside the documents directory")
        return path

    def move_in(self, incoming: Path, relative: str) -> None:
        target = self.absolute(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(incoming, target)

    def delete(self, relative: str) -> None:
        """Remove a stored file; a file already gone is fine (deletes are retried)."""
        with contextlib.suppress(FileNotFoundError):
            self.absolute(relative).unlink()

    @staticmethod
    def discard(incoming: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            incoming.unlink()
