"""Shared document links: a time-limited URL signed with itsdangerous (HMAC-SHA256), so
whoever holds it can download the file without an API key until it expires."""

from __future__ import annotations

import hashlib
import secrets
import uuid

from itsdangerous import Signer

# The salt keeps these signatures from being valid for anything else signed with the same secret.
SALT = "crm.documents.share-link"


class LinkSigner:
    def __init__(self, secret: bytes | None) -> None:
        # Without a configured secret a random one is used: links then live until a restart.
        self._signer = Signer(secret or secrets.token_bytes(32), salt=SALT, digest_method=hashlib.sha256)

    def signature(self, document_id: uuid.UUID, expires: int) -> str:
        """The URL-safe signature (43 characters of base64) of a link to this document that
        expires at this Unix time; the expiry is signed, so it cannot be moved."""
        return self._signer.get_signature(f"{document_id}:{expires}").decode()

    def valid(self, document_id: uuid.UUID, expires: int, signature: str) -> bool:
        return self._signer.verify_signature(f"{document_id}:{expires}", signature)
