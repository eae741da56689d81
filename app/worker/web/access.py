"""Who may use the worker's web server, as one aiohttp middleware on Faust's web app.

Credentials (RECOVERY_WEB_VIEWER_TOKEN, RECOVERY_WEB_OPERATOR_TOKEN, SecretStr: never logged)
are accepted as a bearer token (`Authorization: Bearer <token>`, for scripts and Prometheus)
or as HTTP basic auth with the role as user name (`viewer:<token>`, `operator:<token>`, what
a browser asks for after the 401's `WWW-Authenticate: Basic` challenge). The operator token
is also a viewer's.

- No credential configured and the web host a loopback address: open, everyone an operator,
  as before; requests naming another Host are refused (DNS rebinding: a page whose name
  resolves to 127.0.0.1 would otherwise be same-origin with the worker).
- No credential configured beyond loopback: every request is answered 401 (the worker still
  recovers failures; one ERROR line at start says why the pages are shut).
- GET/HEAD/OPTIONS need a viewer; every other method an operator (viewer: 403), a same-origin
  request (Sec-Fetch-Site, else Origin, else Referer, against Host) and the CSRF token this
  middleware issues for the credential (header X-CSRF-Token or form field csrf_token), also
  when the server is open. A refused request never reaches its handler.

Contract with the pages: a request let through has request["role"] ("viewer" or
"operator") and request["csrf_token"] (str), which POST forms carry as `csrf_token`; every
response let through carries the token in the X-CSRF-Token header too, for scripts.

The decision is pure (authenticate, authorize) over the method, the headers, the submitted
token and the configuration; the middleware only gathers them."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import BasicAuth, web
from multidict import CIMultiDict

from app.settings import Settings

log = logging.getLogger(__name__)
# The pages' contract is request["role"] and request["csrf_token"], plain string keys.
warnings.filterwarnings("ignore", category=web.NotAppKeyWarning, module=__name__)

VIEWER = "viewer"
OPERATOR = "operator"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
REALM = "kafka-recovery"
CHALLENGE = f'Basic realm="{REALM}", charset="UTF-8"'
MIN_TOKEN_LENGTH = 16
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class AccessMisconfigured(ValueError):
    """A credential setting that cannot be used; one plain line."""


@dataclass(frozen=True)
class AccessConfig:
    """What the decision needs: the tokens by role, whether the server is open, and the key
    the CSRF tokens are derived with (random per process: a restart issues new ones)."""

    tokens: Mapping[str, str]  # role -> token; empty: no credential configured
    loopback: bool  # the web host is a loopback address
    csrf_key: bytes

    @property
    def open(self) -> bool:
        return not self.tokens and self.loopback

    @property
    def shut(self) -> bool:
        return not self.tokens and not self.loopback


def is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def config_of(settings: Settings, csrf_key: bytes | None = None) -> AccessConfig:
    tokens: dict[str, str] = {}
    for role, secret in ((VIEWER, settings.web_viewer_token),
                         (OPERATOR, settings.web_operator_token)):
        value = secret.get_secret_value() if secret is not None else ""
        if not value:
            continue
        if len(value) < MIN_TOKEN_LENGTH or any(c in value for c in " ,:\t\r\n"):
            raise AccessMisconfigured(
                f"RECOVERY_WEB_{role.upper()}_TOKEN must be at least {MIN_TOKEN_LENGTH} "
                "characters with no spaces, commas or colons")
        tokens[role] = value
    if len(tokens) == 2 and tokens[VIEWER] == tokens[OPERATOR]:
        raise AccessMisconfigured("RECOVERY_WEB_VIEWER_TOKEN and RECOVERY_WEB_OPERATOR_TOKEN "
                                  "must differ")
    return AccessConfig(tokens, is_loopback(settings.web_host),
                        csrf_key if csrf_key is not None else secrets.token_bytes(32))


# ---- the decision ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    role: str
    csrf_token: str


@dataclass(frozen=True)
class Denied:
    status: int  # 401 or 403
    reason: str

    @property
    def challenge(self) -> bool:
        return self.status == 401


def csrf_token_for(config: AccessConfig, role: str, token: str) -> str:
    """The CSRF token of one credential (the open server's is that of the empty one)."""
    return hmac.new(config.csrf_key, f"{role}\0{token}".encode(), hashlib.sha256).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def credential_of(headers: Mapping[str, str]) -> tuple[str | None, str] | None:
    """(basic-auth user or None for a bearer token, secret) from Authorization, if any."""
    value = headers.get("Authorization", "").strip()
    if not value:
        return None
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer" and rest.strip():
        return None, rest.strip()
    if scheme.lower() == "basic":
        try:
            auth = BasicAuth.decode(value)
        except ValueError:
            return "", ""
        return auth.login, auth.password
    return "", ""


def host_of(headers: Mapping[str, str]) -> str:
    return headers.get("Host", "").strip().lower()


def _host_without_port(host: str) -> str:
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def authenticate(headers: Mapping[str, str], config: AccessConfig) -> Identity | Denied:
    """Which role the request's credential has."""
    if config.open:
        if not is_loopback(_host_without_port(host_of(headers))):
            return Denied(403, "open on loopback only: the Host header names another host")
        return Identity(OPERATOR, csrf_token_for(config, OPERATOR, ""))
    if config.shut:
        return Denied(401, "the web host is not a loopback address and no credential is "
                           "configured (RECOVERY_WEB_VIEWER_TOKEN, RECOVERY_WEB_OPERATOR_TOKEN)")
    credential = credential_of(headers)
    if credential is None:
        return Denied(401, "a credential is required")
    user, secret = credential
    for role in (OPERATOR, VIEWER):
        token = config.tokens.get(role)
        if token is not None and (user is None or user == role) and secret \
                and _same(secret, token):
            return Identity(role, csrf_token_for(config, role, token))
    return Denied(401, "bad credential")


def _origin(url: str) -> str | None:
    """scheme://host[:port] of a URL, the default port left out; None when unreadable."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = {"http": 80, "https": 443}[parts.scheme]
    return host if port in (None, default) else f"{host}:{port}"


def same_origin(headers: Mapping[str, str]) -> bool:
    """A browser's request from the worker's own pages. Sec-Fetch-Site (set by the browser,
    out of a page's reach) decides when present; else Origin, else Referer, must name the
    Host the request was sent to. A request with none of them comes from no browser (a
    script): no cross-site request to fear, and it still needs the CSRF token."""
    site = headers.get("Sec-Fetch-Site")
    if site is not None:
        return site.strip().lower() in ("same-origin", "none")
    host = host_of(headers)
    for name in ("Origin", "Referer"):
        value = headers.get(name)
        if value is not None:
            origin = _origin(value)
            if origin is None:
                return False  # "null" (a sandboxed or privacy-stripped origin) included
            bare = host.removesuffix(":80").removesuffix(":443")
            return origin in (host, bare)
    return True


def authorize(method: str, headers: Mapping[str, str], submitted_csrf: str | None,
              identity: Identity) -> Identity | Denied:
    """A request with a known role: may it do this?"""
    if method.upper() in SAFE_METHODS:
        return identity
    if identity.role != OPERATOR:
        return Denied(403, "this needs the operator role")
    if not same_origin(headers):
        return Denied(403, "cross-site request refused")
    if not submitted_csrf or not _same(submitted_csrf, identity.csrf_token):
        return Denied(403, f"missing or wrong CSRF token ({CSRF_HEADER} header or "
                           f"{CSRF_FIELD} form field)")
    return identity


def decide(method: str, headers: Mapping[str, str], submitted_csrf: str | None,
           config: AccessConfig) -> Identity | Denied:
    """The whole decision: authenticate, then authorize."""
    ci = CIMultiDict(headers)
    who = authenticate(ci, config)
    if isinstance(who, Denied):
        return who
    return authorize(method, ci, submitted_csrf, who)


# ---- the middleware -------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def submitted_token(request: web.Request) -> str | None:
    token = request.headers.get(CSRF_HEADER)
    if token:
        return token
    if request.content_type in FORM_TYPES:
        form = await request.post()  # cached: the handler's request.post() reads it again
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


def refusal(denied: Denied) -> web.Response:
    headers = {"WWW-Authenticate": CHALLENGE} if denied.challenge else {}
    return web.Response(status=denied.status, text=denied.reason + "\n", headers=headers)


def middleware(config: AccessConfig) -> Any:
    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        who = authenticate(request.headers, config)
        if isinstance(who, Identity) and request.method.upper() not in SAFE_METHODS \
                and who.role == OPERATOR:
            who = authorize(request.method, request.headers, await submitted_token(request),
                            who)
        elif isinstance(who, Identity):
            who = authorize(request.method, request.headers, None, who)
        if isinstance(who, Denied):
            return refusal(who)
        request["role"] = who.role
        request["csrf_token"] = who.csrf_token
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # a redirect after a POST, say
            exc.headers[CSRF_HEADER] = who.csrf_token
            raise
        if not response.prepared:
            response.headers[CSRF_HEADER] = who.csrf_token
        return response

    return access


def install(app: Any, settings: Settings) -> AccessConfig:
    """Put the middleware first on Faust's aiohttp application (before the server starts)."""
    config = config_of(settings)  # AccessMisconfigured: `recovery worker` says it in one line
    if config.shut:
        log.error("web: RECOVERY_WEB_HOST=%s is not a loopback address and no credential is "
                  "set (RECOVERY_WEB_VIEWER_TOKEN / RECOVERY_WEB_OPERATOR_TOKEN): every web "
                  "request is answered 401", settings.web_host)
    app.web.web_app.middlewares.insert(0, middleware(config))
    return config
