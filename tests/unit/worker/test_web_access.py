"""The web access decision (app/worker/web/access.py), branch by branch, and the middleware on
a real aiohttp server."""

from __future__ import annotations

import asyncio
import base64
import logging

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from app.kafka.redaction import install as install_redaction
from app.settings import Settings
from app.worker.web import access as a

VIEWER_TOKEN = "viewer-token-0123456789"
OPERATOR_TOKEN = "operator-token-0123456789"
KEY = b"k" * 32
HOST = {"Host": "recovery.example:6066"}


def settings(host: str = "0.0.0.0", viewer: str | None = VIEWER_TOKEN,
             operator: str | None = OPERATOR_TOKEN) -> Settings:
    return Settings(web_host=host,
                    web_viewer_token=SecretStr(viewer) if viewer else None,
                    web_operator_token=SecretStr(operator) if operator else None)


def config(**kwargs) -> a.AccessConfig:
    return a.config_of(settings(**kwargs), csrf_key=KEY)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def csrf(role: str = a.OPERATOR, token: str = OPERATOR_TOKEN) -> str:
    return a.csrf_token_for(config(), role, token)


# ---- configuration --------------------------------------------------------------------------

@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("10.0.0.5", False), ("::", False),
    ("worker.internal", False)])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert a.is_loopback(host) is loopback


def test_open_only_on_loopback_without_credentials() -> None:
    assert config(host="127.0.0.1", viewer=None, operator=None).open
    assert config(host="0.0.0.0", viewer=None, operator=None).shut
    assert not config(host="127.0.0.1").open  # credentials set: required on loopback too


@pytest.mark.parametrize("viewer, operator, message", [
    ("tiny-tok", None, "at least 16"), ("has a space in it xx", None, "no spaces"),
    (None, "with:colon-0123456789", "no spaces"),
    ("same-token-0123456789", "same-token-0123456789", "must differ")])
def test_unusable_tokens_are_refused_in_one_line(viewer, operator, message) -> None:
    with pytest.raises(a.AccessMisconfigured, match=message) as raised:
        config(viewer=viewer, operator=operator)
    assert "\n" not in str(raised.value)
    assert all(t not in str(raised.value) for t in (viewer, operator) if t)


def test_tokens_are_masked_in_logs_and_never_shown(caplog) -> None:
    s = settings()
    assert VIEWER_TOKEN not in repr(s) and OPERATOR_TOKEN not in str(s.model_dump())
    install_redaction(s)
    with caplog.at_level(logging.INFO, logger="tests.web_access"):
        logging.getLogger("tests.web_access").info("got %s and %s", VIEWER_TOKEN,
                                                   OPERATOR_TOKEN)
    assert VIEWER_TOKEN not in caplog.text and OPERATOR_TOKEN not in caplog.text


# ---- authentication -------------------------------------------------------------------------

def test_missing_credential_is_401_with_a_challenge() -> None:
    denied = a.decide("GET", HOST, None, config())
    assert isinstance(denied, a.Denied) and denied.status == 401 and denied.challenge


@pytest.mark.parametrize("headers", [
    bearer("wrong-token-0123456789"), basic("operator", "wrong"),
    basic("viewer", OPERATOR_TOKEN.upper()), basic("someone", OPERATOR_TOKEN),
    basic("viewer", OPERATOR_TOKEN),  # the user name must be the token's role
    {"Authorization": "Basic !!!not-base64"}, {"Authorization": "Digest x"},
    {"Authorization": "Bearer "}])
def test_bad_credentials_are_401(headers) -> None:
    denied = a.decide("GET", {**HOST, **headers}, None, config())
    assert isinstance(denied, a.Denied) and denied.status == 401


@pytest.mark.parametrize("headers, role, token", [
    (bearer(VIEWER_TOKEN), a.VIEWER, VIEWER_TOKEN),
    (basic("viewer", VIEWER_TOKEN), a.VIEWER, VIEWER_TOKEN),
    (bearer(OPERATOR_TOKEN), a.OPERATOR, OPERATOR_TOKEN),
    (basic("operator", OPERATOR_TOKEN), a.OPERATOR, OPERATOR_TOKEN)])
def test_good_credentials_get_their_role_and_csrf_token(headers, role, token) -> None:
    who = a.decide("GET", {**HOST, **headers}, None, config())
    assert who == a.Identity(role, a.csrf_token_for(config(), role, token))


def test_csrf_tokens_differ_per_credential_and_per_process() -> None:
    assert csrf(a.OPERATOR, OPERATOR_TOKEN) != csrf(a.VIEWER, VIEWER_TOKEN)
    other = a.config_of(settings())  # a random key
    assert a.csrf_token_for(other, a.OPERATOR, OPERATOR_TOKEN) != csrf()


def test_shut_server_answers_401_to_everything() -> None:
    shut = config(viewer=None, operator=None)
    for headers in ({}, bearer(OPERATOR_TOKEN)):
        denied = a.decide("GET", {**HOST, **headers}, None, shut)
        assert isinstance(denied, a.Denied) and denied.status == 401
        assert "RECOVERY_WEB_OPERATOR_TOKEN" in denied.reason


def test_open_server_makes_everyone_an_operator_on_a_loopback_host_name() -> None:
    open_ = config(host="127.0.0.1", viewer=None, operator=None)
    for host in ("127.0.0.1:6066", "localhost:6066", "[::1]:6066", "localhost"):
        who = a.decide("GET", {"Host": host}, None, open_)
        assert isinstance(who, a.Identity) and who.role == a.OPERATOR
    # DNS rebinding: another name pointed at 127.0.0.1 is not let in.
    denied = a.decide("GET", {"Host": "evil.example:6066"}, None, open_)
    assert isinstance(denied, a.Denied) and denied.status == 403


# ---- authorization --------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_viewer_may_read(method: str) -> None:
    assert isinstance(a.decide(method, {**HOST, **bearer(VIEWER_TOKEN)}, None, config()),
                      a.Identity)


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "PROPFIND"])
def test_viewer_may_change_nothing(method: str) -> None:
    token = a.csrf_token_for(config(), a.VIEWER, VIEWER_TOKEN)
    denied = a.decide(method, {**HOST, **bearer(VIEWER_TOKEN)}, token, config())
    assert denied == a.Denied(403, "this needs the operator role")


def test_operator_post_with_its_token_passes() -> None:
    who = a.decide("POST", {**HOST, **bearer(OPERATOR_TOKEN)}, csrf(), config())
    assert isinstance(who, a.Identity) and who.role == a.OPERATOR


@pytest.mark.parametrize("submitted", [None, "", "0" * 64,
                                       a.csrf_token_for(a.config_of(settings(), csrf_key=KEY),
                                                        a.VIEWER, VIEWER_TOKEN)])
def test_operator_post_without_the_right_csrf_token_is_403(submitted) -> None:
    denied = a.decide("POST", {**HOST, **bearer(OPERATOR_TOKEN)}, submitted, config())
    assert isinstance(denied, a.Denied) and denied.status == 403 and "CSRF" in denied.reason


@pytest.mark.parametrize("browser, allowed", [
    ({"Sec-Fetch-Site": "same-origin"}, True), ({"Sec-Fetch-Site": "none"}, True),
    ({"Sec-Fetch-Site": "cross-site"}, False), ({"Sec-Fetch-Site": "same-site"}, False),
    # Sec-Fetch-Site decides over a matching Origin (the browser sets it, a page cannot).
    ({"Sec-Fetch-Site": "cross-site", "Origin": "http://recovery.example:6066"}, False),
    ({"Origin": "http://recovery.example:6066"}, True),
    ({"Origin": "https://recovery.example:6066"}, True),
    ({"Origin": "http://evil.example"}, False), ({"Origin": "null"}, False),
    ({"Origin": "http://recovery.example:6067"}, False),
    ({"Referer": "http://recovery.example:6066/incidents/x"}, True),
    ({"Referer": "http://evil.example/recovery.example:6066"}, False),
    ({"Origin": "http://evil.example", "Referer": "http://recovery.example:6066/"}, False),
    ({}, True),  # no browser: a script, which needs the CSRF token all the same
])
def test_cross_site_check(browser: dict[str, str], allowed: bool) -> None:
    result = a.decide("POST", {**HOST, **bearer(OPERATOR_TOKEN), **browser}, csrf(), config())
    if allowed:
        assert isinstance(result, a.Identity)
    else:
        assert result == a.Denied(403, "cross-site request refused")


def test_default_ports_compare_equal() -> None:
    assert a.same_origin({"Host": "recovery.example", "Origin": "http://recovery.example"})
    assert a.same_origin({"Host": "recovery.example", "Origin": "https://recovery.example:443"})
    assert a.same_origin({"Host": "[::1]:6066", "Origin": "http://[::1]:6066"})


def test_open_server_still_checks_csrf_and_origin() -> None:
    open_ = config(host="127.0.0.1", viewer=None, operator=None)
    local = {"Host": "127.0.0.1:6066"}
    token = a.csrf_token_for(open_, a.OPERATOR, "")
    assert isinstance(a.decide("POST", local, token, open_), a.Identity)
    assert a.decide("POST", local, None, open_).status == 403  # type: ignore[union-attr]
    cross = {**local, "Origin": "http://evil.example"}
    assert a.decide("POST", cross, token, open_) == a.Denied(403, "cross-site request refused")


# ---- the middleware on a real server --------------------------------------------------------

def serve_and_call(config: a.AccessConfig, calls: list[dict]) -> list[tuple[int, dict, str]]:
    seen: list[str] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.method)
        return web.Response(text=f'{request["role"]} {request["csrf_token"]}')

    async def change(request: web.Request) -> web.Response:
        form = await request.post()  # read again after the middleware read it
        seen.append(f"POST {form.get('x')}")
        raise web.HTTPSeeOther("/page")

    async def run() -> list[tuple[int, dict, str]]:
        app = web.Application(middlewares=[a.middleware(config)])
        app.router.add_get("/page", page)
        app.router.add_post("/change", change)
        results = []
        async with TestServer(app, host="127.0.0.1") as server, ClientSession() as session:
            for call in calls:
                async with session.request(call.get("method", "GET"),
                                           server.make_url(call.get("path", "/page")),
                                           headers=call.get("headers", {}),
                                           data=call.get("data"),
                                           allow_redirects=False) as response:
                    results.append((response.status, dict(response.headers),
                                    await response.text()))
        results.append((0, {}, ",".join(seen)))
        return results

    return asyncio.run(run())


def test_middleware_refuses_before_the_handler_and_tells_the_page_role_and_token() -> None:
    cfg = config()
    token = a.csrf_token_for(cfg, a.OPERATOR, OPERATOR_TOKEN)
    results = serve_and_call(cfg, [
        {},  # no credential
        {"headers": bearer("wrong-token-0123456789")},
        {"headers": basic("viewer", VIEWER_TOKEN)},
        {"method": "POST", "path": "/change", "headers": bearer(VIEWER_TOKEN),
         "data": {"x": "viewer"}},
        {"method": "POST", "path": "/change", "headers": bearer(OPERATOR_TOKEN),
         "data": {"x": "no-token"}},
        {"method": "POST", "path": "/change",
         "headers": {**bearer(OPERATOR_TOKEN), "Origin": "http://evil.example"},
         "data": {"x": "foreign", "csrf_token": token}},
        {"method": "POST", "path": "/change", "headers": bearer(OPERATOR_TOKEN),
         "data": {"x": "form-token", "csrf_token": token}},
        {"method": "POST", "path": "/change",
         "headers": {**bearer(OPERATOR_TOKEN), "X-CSRF-Token": token},
         "data": {"x": "header-token"}},
    ])
    statuses = [status for status, _, _ in results[:-1]]
    assert statuses == [401, 401, 200, 403, 403, 403, 303, 303]
    assert results[0][1]["WWW-Authenticate"] == a.CHALLENGE
    viewer_token = a.csrf_token_for(cfg, a.VIEWER, VIEWER_TOKEN)
    assert results[2][2] == f"viewer {viewer_token}"
    assert results[2][1][a.CSRF_HEADER] == viewer_token
    assert results[6][1][a.CSRF_HEADER] == token
    # Only the allowed requests reached a handler.
    assert results[-1][2] == "GET,POST form-token,POST header-token"


def test_install_puts_the_middleware_first_and_says_when_everything_is_shut(caplog) -> None:
    from types import SimpleNamespace

    other = object()
    app = SimpleNamespace(web=SimpleNamespace(web_app=SimpleNamespace(middlewares=[other])))
    with caplog.at_level(logging.ERROR, logger=a.__name__):
        a.install(app, settings(viewer=None, operator=None))
    assert len(app.web.web_app.middlewares) == 2 and app.web.web_app.middlewares[1] is other
    [line] = [r.getMessage() for r in caplog.records]
    assert "0.0.0.0 is not a loopback address" in line and "answered 401" in line
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger=a.__name__):
        a.install(app, settings())
    assert caplog.records == []
    with pytest.raises(a.AccessMisconfigured, match="^RECOVERY_WEB_OPERATOR_TOKEN"):
        a.install(app, settings(operator="tiny"))
