"""Shared document links: a time-limited URL signed with HMAC-SHA256, so whoever holds it
can download the file without an API key until it expires."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid


class LinkSigner:
    def __init__(self, secret: bytes | None) -> None:
        # Without a configured secret a random one is used: links then live until a restart.
        self._secret = secret or secrets.token_bytes(32)

    def signature(self, document_id: uuid.UUID, expires: int) -> str:
        message = f"{document_id}:{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def valid(self, document_id: uuid.UUID, expires: int, signature: str) -> bool:
        return hmac.compare_digest(self.signature(document_id, expires), signature)
