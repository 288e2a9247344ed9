"""Dashboard sessions: a signed cookie (itsdangerous) that holds a random session id and the
digest of the API key someone signed in with (never the key itself), and the per-session form
token that every POST form of the dashboard carries (CSRF).

The cookie is HttpOnly, SameSite=Lax, scoped to `/dashboard`, and Secure when the page was served
over https. Only the dashboard reads it: the JSON API (`/v1/...`) authenticates by
`Authorization: Bearer` alone."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

COOKIE = "cx_dashboard"
COOKIE_PATH = "/dashboard"
_SESSION_SALT = "cx.dashboard.session"
_FORM_SALT = "cx.dashboard.form"


@dataclass(frozen=True, slots=True)
class DashboardSession:
    """`sid` is random per session (a new one at every sign-in, so a session id planted before
    sign-in is worth nothing after it); `key_digest` is None before sign-in."""

    sid: str
    key_digest: str | None = None

    @property
    def signed_in(self) -> bool:
        return self.key_digest is not None


class DashboardSessions:
    """Makes, reads and checks dashboard sessions and their form tokens."""

    def __init__(self, secret: bytes | None, max_age_s: float) -> None:
        key = secret or secrets.token_bytes(32)
        self._cookies = URLSafeTimedSerializer(key, salt=_SESSION_SALT)
        self._forms = URLSafeTimedSerializer(key, salt=_FORM_SALT)
        self.max_age_s = max_age_s

    @staticmethod
    def new(key_digest: str | None = None) -> DashboardSession:
        return DashboardSession(sid=secrets.token_urlsafe(18), key_digest=key_digest)

    def read(self, request: Request) -> DashboardSession | None:
        """The request's session, or None when it has no cookie, a forged or an expired one."""
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self._cookies.loads(raw, max_age=self.max_age_s)
        except BadSignature:  # SignatureExpired is one too
            return None
        if not isinstance(data, dict) or not isinstance(data.get("sid"), str):
            return None
        digest = data.get("key")
        return DashboardSession(sid=data["sid"], key_digest=digest if isinstance(digest, str) else None)

    def store(self, response: Response, request: Request, session: DashboardSession) -> None:
        response.set_cookie(
            COOKIE,
            self._cookies.dumps({"sid": session.sid, "key": session.key_digest}),
            max_age=int(self.max_age_s),
            path=COOKIE_PATH,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="lax",
        )

    @staticmethod
    def clear(response: Response, request: Request) -> None:
        response.delete_cookie(COOKIE, path=COOKIE_PATH, secure=request.url.scheme == "https", httponly=True, samesite="lax")

    def form_token(self, session: DashboardSession) -> str:
        """The token a POST form of this session carries: the session id, signed."""
        return str(self._forms.dumps(session.sid))

    def form_token_ok(self, session: DashboardSession | None, token: object) -> bool:
        if session is None or not isinstance(token, str) or not token:
            return False
        try:
            sid = self._forms.loads(token, max_age=self.max_age_s)
        except BadSignature:
            return False
        return isinstance(sid, str) and hmac.compare_digest(sid, session.sid)
