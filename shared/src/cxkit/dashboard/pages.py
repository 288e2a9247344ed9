"""What both services' `/dashboard` pages share: the templates (a base page with its CSS, the
sign-in form), sign-in with an API key (the same check as `Authorization: Bearer`, the key's rate
limit included), sign-out, the session dependency and the page headers.

A service mounts it with `install_dashboard(app)` and writes its own page as a route that takes
`DashboardUser` and answers `render_page(...)`."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.responses import HTMLResponse, RedirectResponse, Response

from cxkit.dashboard import charts, formats
from cxkit.dashboard.sessions import DashboardSession, DashboardSessions
from cxkit.http.auth import Principal, hash_key
from cxkit.http.ratelimit import SCOPE_KEY as RATE_LIMIT_SCOPE_KEY
from cxkit.http.ratelimit import TooManyRequests

KIT_TEMPLATES = Path(__file__).parent / "templates"
HOME = "/dashboard"
SIGN_IN = "/dashboard/sign-in"
SIGN_OUT = "/dashboard/sign-out"
# No script at all (the pages work without JavaScript), nothing from elsewhere, no framing.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}
FORM_LIMITS = {"max_files": 0, "max_fields": 20, "max_part_size": 8 * 1024}


def dashboard_templates(*directories: Path) -> Jinja2Templates:
    """Jinja2Templates over a service's own templates and the kit's (base page, sign-in), with
    the chart helpers and number formats as globals."""
    templates = Jinja2Templates(directory=[*directories, KIT_TEMPLATES])
    env = templates.env
    env.trim_blocks = True
    env.lstrip_blocks = True
    env.globals.update(line_chart=charts.line_chart, bar_chart=charts.bar_chart, Bar=charts.Bar, Point=charts.Point)
    env.filters.update(num=formats.number, pct=formats.percent, money=formats.money, humanize=formats.humanize)
    return templates


TEMPLATES = dashboard_templates()


class SignInRequired(Exception):
    """Raised by `DashboardUser` without a valid session: answered with a redirect to sign-in."""


class TooManyPageRequests(Exception):
    """Raised by `DashboardUser` when the session's key is past its rate limit: answered with a
    429 page saying when to come back (`Retry-After`), before the page runs its queries."""

    def __init__(self, refused: TooManyRequests) -> None:
        super().__init__(refused.detail)
        self.refused = refused


async def count_key_use(request: Request, principal: Principal) -> None:
    """Count a use of the key against its own rate limit, as `ApiKeyBearer` counts a Bearer
    request (one count per request; the answer carries the key's RateLimit fields). Raises
    TooManyRequests past the limit."""
    limits = getattr(request.app.state, "rate_limits", None)
    if limits is not None and RATE_LIMIT_SCOPE_KEY not in request.scope:
        await limits.check_key(request.scope, principal.key_str)


@dataclass(frozen=True, slots=True)
class SignedIn:
    principal: Principal
    session: DashboardSession
    form_token: str


def sessions_of(request: Request) -> DashboardSessions:
    sessions: DashboardSessions = request.app.state.dashboard_sessions
    return sessions


async def signed_in(request: Request) -> SignedIn:
    """The session's key, checked again on every page (a revoked key, or one that lost the `read`
    scope, ends the session within the key cache's lifetime) and counted against its rate limit,
    shared with the API (past it: TooManyPageRequests)."""
    sessions = sessions_of(request)
    session = sessions.read(request)
    if session is None or session.key_digest is None:
        raise SignInRequired
    principal = await request.app.state.auth.verify_digest(session.key_digest)
    if principal is None:
        raise SignInRequired
    try:
        await count_key_use(request, principal)
    except TooManyRequests as exc:
        raise TooManyPageRequests(exc) from None
    if not principal.has("read"):
        raise SignInRequired
    return SignedIn(principal, session, sessions.form_token(session))


DashboardUser = Annotated[SignedIn, Depends(signed_in)]


def render_page(
    request: Request,
    templates: Jinja2Templates,
    name: str,
    *,
    status: int = 200,
    user: SignedIn | None = None,
    **context: Any,
) -> HTMLResponse:
    service = getattr(request.app.state.settings, "service_name", request.app.title)
    return templates.TemplateResponse(
        request,
        name,
        {
            "lang": "en",
            "service": service,
            "user": user,
            "form_token": user.form_token if user else context.pop("form_token", ""),
            "generated_at": dt.datetime.now(dt.UTC),
            **context,
        },
        status_code=status,
        headers=PAGE_HEADERS,
    )


def _safe_next(value: object) -> str:
    """Only a dashboard path of this site (no open redirect)."""
    if isinstance(value, str) and value.startswith(HOME) and not value.startswith("//") and "\\" not in value:
        parsed = urllib.parse.urlsplit(value)
        if not parsed.scheme and not parsed.netloc and (parsed.path == HOME or parsed.path.startswith(HOME + "/")):
            return value
    return HOME


async def _form(request: Request) -> FormData | None:
    try:
        return await request.form(**FORM_LIMITS)
    except (MultiPartException, HTTPException):
        return None


def _sign_in_page(
    request: Request, session: DashboardSession, *, status: int = 200, error: str | None = None, next_url: str = HOME
) -> HTMLResponse:
    sessions = sessions_of(request)
    response = render_page(
        request,
        TEMPLATES,
        "dashboard_sign_in.html",
        status=status,
        error=error,
        next_url=next_url,
        form_token=sessions.form_token(session),
    )
    sessions.store(response, request, session)
    return response


def _refused(request: Request, message: str, status: int = 403) -> HTMLResponse:
    return render_page(request, TEMPLATES, "dashboard_message.html", status=status, title="Form refused", message=message)


STALE_FORM = (
    "This form had expired or did not come from this dashboard (its security token did not match your session). "
    "Nothing was changed: go back, reload the page and try again."
)

router = APIRouter(include_in_schema=False)


@router.get(SIGN_IN)
async def sign_in_form(request: Request) -> Response:
    sessions = sessions_of(request)
    session = sessions.read(request) or sessions.new()
    return _sign_in_page(request, session, next_url=_safe_next(request.query_params.get("next")))


@router.post(SIGN_IN)
async def sign_in(request: Request) -> Response:
    sessions = sessions_of(request)
    session = sessions.read(request)
    form = await _form(request)
    if form is None or not sessions.form_token_ok(session, form.get("form_token")):
        return _refused(request, STALE_FORM)
    assert session is not None  # form_token_ok checked it
    next_url = _safe_next(form.get("next"))
    key = form.get("api_key")
    key = key.strip() if isinstance(key, str) else ""
    if not key:
        return _sign_in_page(request, session, status=422, error="Enter an API key.", next_url=next_url)
    principal = await request.app.state.auth.verify(key)
    if principal is None:
        limits = getattr(request.app.state, "rate_limits", None)
        if limits is not None:
            try:
                await limits.check_failed_auth(request.scope)
            except TooManyRequests as exc:
                return _sign_in_page(request, session, status=429, error=str(exc.detail), next_url=next_url)
        return _sign_in_page(
            request, session, status=401, error="That API key is unknown, revoked or expired.", next_url=next_url
        )
    try:
        await count_key_use(request, principal)
    except TooManyRequests as exc:
        refused = _sign_in_page(request, session, status=429, error=str(exc.detail), next_url=next_url)
        refused.headers.update(exc.headers or {})
        return refused
    if not principal.has("read"):
        return _sign_in_page(request, session, status=403, error="That API key lacks the `read` scope.", next_url=next_url)
    response = RedirectResponse(next_url, status_code=303, headers={"Cache-Control": "no-store"})
    # A new session id at sign-in: one known before it (planted by someone else) is worth nothing.
    sessions.store(response, request, sessions.new(hash_key(key)))
    return response


@router.post(SIGN_OUT)
async def sign_out(request: Request) -> Response:
    sessions = sessions_of(request)
    form = await _form(request)
    if form is None or not sessions.form_token_ok(sessions.read(request), form.get("form_token")):
        return _refused(request, STALE_FORM)
    response = RedirectResponse(SIGN_IN, status_code=303, headers={"Cache-Control": "no-store"})
    sessions.clear(response, request)
    return response


async def _too_many_requests(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TooManyPageRequests)
    response = render_page(
        request,
        TEMPLATES,
        "dashboard_message.html",
        status=429,
        title="Too many requests",
        message=f"{exc.refused.detail}. The dashboard counts against the API key's rate limit, as the API does.",
    )
    response.headers.update(exc.refused.headers or {})
    return response


async def _to_sign_in(request: Request, exc: Exception) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(
        f"{SIGN_IN}?{urllib.parse.urlencode({'next': target})}", status_code=303, headers={"Cache-Control": "no-store"}
    )


def install_dashboard(app: FastAPI, *pages: APIRouter) -> None:
    """Sign-in, sign-out and the service's dashboard pages; reads `app.state.settings` for the
    session secret and lifetime."""
    settings = app.state.settings
    secret = settings.dashboard_session_secret
    app.state.dashboard_sessions = DashboardSessions(
        secret.get_secret_value().encode() if secret else None, settings.dashboard_session_hours * 3600
    )
    app.add_exception_handler(SignInRequired, _to_sign_in)
    app.add_exception_handler(TooManyPageRequests, _too_many_requests)
    app.include_router(router)
    for page in pages:
        app.include_router(page)
