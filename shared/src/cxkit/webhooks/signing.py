"""Standard Webhooks signatures (the `standardwebhooks` library) and secrets `whsec_<base64>`."""

from __future__ import annotations

import base64
import datetime as dt
import secrets

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret: 32 random bytes, base64, after `whsec_`."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signed_headers(
    secret: str, webhook_id: str, body: bytes, at: dt.datetime, previous_secret: str | None = None
) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt: `webhook-signature` is
    `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, followed (space-separated, as the standard
    allows during a rotation) by the signature with `previous_secret` when one is given."""
    text = body.decode()
    signature = " ".join(Webhook(s).sign(webhook_id, at, text) for s in (secret, previous_secret) if s)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }
