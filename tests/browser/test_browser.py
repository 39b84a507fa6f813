"""A real browser against the example app under gunicorn (3 workers x 4 threads, Redis).

Headless Chromium (Debian's) checks what the README promises about cookies:
logins survive reloads on every worker, the session cookie is ``HttpOnly``,
logout deletes it, "remember me" makes it persistent, the cart (a nested
change) survives, the consent banner switches opt-in storage, header mode
keeps its token out of cookies, and where a ``__Host-`` cookie works without
HTTPS. A screenshot of the state page goes to the output folder.
"""

from __future__ import annotations

import time
import typing as t

import pytest

if t.TYPE_CHECKING:
    from pathlib import Path

    import redis
    from playwright.sync_api import Browser, BrowserContext, Page

    from .conftest import Shop

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.gunicorn]

COOKIE = "session"
DAY = 86400
#: Reloads allowed while waiting to see a second worker (typically 2 or 3 suffice).
MAX_RELOADS = 40


# -- helpers ------------------------------------------------------------------


def open_page(context: BrowserContext, path: str = "/") -> Page:
    page = context.new_page()
    visit(page, path)
    return page


def visit(page: Page, path: str) -> str:
    """Navigate; return the pid of the worker that answered."""
    response = page.goto(path)
    assert response is not None
    assert response.status == 200, response.status
    return worker_of(page, response.headers)


def worker_of(page: Page, headers: dict[str, str]) -> str:
    """The answering worker, from the header; the page footer must agree."""
    pid = headers["x-worker-pid"]
    assert page.inner_text("[data-testid=worker-pid]") == pid
    return pid


def reload(page: Page) -> str:
    response = page.reload()
    assert response is not None
    assert response.status == 200
    return worker_of(page, response.headers)


def submit(page: Page, selector: str) -> str:
    """Click a form button, follow the 303, return the worker of the page shown."""
    with page.expect_navigation() as navigation:
        page.click(selector)
    response = navigation.value
    assert response is not None
    assert response.status == 200
    return worker_of(page, response.headers)


def log_in(page: Page, user: str, remember: bool = False) -> None:
    visit(page, "/")
    page.fill("[data-testid=login-form] input[name=username]", user)
    if remember:
        page.check("[data-testid=login-form] input[name=remember]")
    submit(page, "[data-testid=login-form] button")
    assert who(page) == f"logged in as {user}"


def who(page: Page) -> str:
    return page.inner_text("[data-testid=who]").strip()


def session_cookie(context: BrowserContext, name: str = COOKIE) -> dict[str, t.Any] | None:
    found = [cookie for cookie in context.cookies() if cookie["name"] == name]
    assert len(found) <= 1, found
    return dict(found[0]) if found else None


def field(page: Page, name: str) -> str:
    return page.inner_text(f"[data-testid={name}]").strip()


def reload_across_workers(page: Page, check: t.Callable[[], None], first: str) -> set[str]:
    """Reload until at least two workers served the page, running ``check``
    each time; returns the pids seen."""
    workers = {first}
    for _ in range(MAX_RELOADS):
        workers.add(reload(page))
        check()
        if len(workers) >= 2:
            break
    assert len(workers) >= 2, f"every reload was served by worker {workers}"
    return workers


# -- the tests ------------------------------------------------------------------


def test_login_survives_reloads_and_workers(chromium: Browser, context: BrowserContext, shop: Shop) -> None:
    page = open_page(context)
    assert who(page) == "not logged in"
    assert session_cookie(context) is None  # reading the session sets no cookie
    submit(page, "[data-testid=consent-banner] button[value=accept]")
    submit(page, "[data-testid=add-apple]")  # a stored anonymous session first...
    before = session_cookie(context)
    assert before is not None

    log_in(page, "alice")
    after = session_cookie(context)
    assert after is not None
    assert after["value"].split(".")[0] != before["value"].split(".")[0]  # ...renewed at login
    assert field(page, "count-apple") == "1"  # with its data

    workers = reload_across_workers(page, lambda: check_logged_in(page, "alice"), visit(page, "/"))
    for _ in range(3):
        workers.add(reload(page))
        check_logged_in(page, "alice")
    assert session_cookie(context) == after  # nothing re-issued the cookie
    visit(page, "/state")
    assert field(page, "is-new") == "False"
    assert field(page, "id-prefix") == after["value"][:8]

    # The pre-login token is worthless now (session-fixation defence).
    replay = chromium.new_context(base_url=shop.url)
    try:
        replay.add_cookies([{"name": COOKIE, "value": before["value"], "url": shop.url}])
        page = open_page(replay)
        assert who(page) == "not logged in"
        assert page.is_visible("[data-testid=cart-empty]")
    finally:
        replay.close()


def check_logged_in(page: Page, user: str) -> None:
    assert who(page) == f"logged in as {user}"
    assert field(page, "greeting").startswith(f"Hello, {user}.")


def test_document_cookie_cannot_read_the_session_cookie(context: BrowserContext) -> None:
    page = open_page(context)
    page.click("[data-testid=consent-banner] button[value=decline]")  # a plain cookie, for contrast
    log_in(page, "bob")
    cookie = session_cookie(context)
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["secure"] is False
    assert cookie["path"] == "/"
    visible = page.evaluate("document.cookie")
    names = [part.split("=", 1)[0].strip() for part in visible.split(";")]
    assert names == ["example_consent"]  # JavaScript reads ordinary cookies...
    assert cookie["value"] not in visible  # ...but not the HttpOnly session cookie
    page.evaluate(f"document.cookie = '{COOKIE}=forged; path=/'")  # nor overwrite it
    assert session_cookie(context) == cookie
    reload(page)
    assert who(page) == "logged in as bob"


def test_logout_deletes_the_session_and_clears_the_cookie(
    context: BrowserContext, shop: Shop, redis_client: redis.Redis
) -> None:
    page = open_page(context)
    log_in(page, "carol")
    cookie = session_cookie(context)
    assert cookie is not None
    key = shop.redis_key(cookie["value"])
    assert redis_client.exists(key)

    submit(page, "[data-testid=logout]")
    assert page.is_visible("[data-testid=bye]")
    assert who(page) == "not logged in"
    assert session_cookie(context) is None
    assert not redis_client.exists(key)

    context.add_cookies([{"name": COOKIE, "value": cookie["value"], "url": shop.url}])  # replay it
    reload(page)
    assert who(page) == "not logged in"


@pytest.mark.parametrize("remember", [True, False], ids=["remember-me", "plain"])
def test_remember_me_gives_a_persistent_cookie(context: BrowserContext, remember: bool) -> None:
    page = open_page(context)
    started = time.time()
    log_in(page, "dave", remember=remember)
    cookie = session_cookie(context)
    assert cookie is not None
    greeting = field(page, "greeting")
    if remember:
        # Max-Age is 30 days: the browser keeps the cookie when it closes.
        assert cookie["expires"] > 0
        assert started + 29 * DAY < cookie["expires"] < started + 31 * DAY
        assert "30 days" in greeting
    else:
        assert cookie["expires"] == -1  # a browser-session cookie
        assert "until you close the browser" in greeting
    visit(page, "/state")
    assert field(page, "longterm") == str(remember)
    assert field(page, "consented") == "True"  # logging in counts as consent


def test_cart_survives_reloads_and_workers(
    context: BrowserContext, shop: Shop, redis_client: redis.Redis
) -> None:
    page = open_page(context)
    submit(page, "[data-testid=consent-banner] button[value=accept]")
    assert not page.is_visible("[data-testid=consent-banner]")
    for item in ("apple", "coffee", "apple"):
        submit(page, f"[data-testid=add-{item}]")

    def check() -> None:
        assert field(page, "count-apple") == "2"
        assert field(page, "count-coffee") == "1"

    check()
    reload_across_workers(page, check, visit(page, "/"))
    cookie = session_cookie(context)
    assert cookie is not None
    assert redis_client.hget(shop.redis_key(cookie["value"]), "cart") is not None
    visit(page, "/state")
    assert "apple" in field(page, "value-cart")


def test_consent_banner_switches_opt_in_storage(
    context: BrowserContext, shop: Shop, redis_client: redis.Redis, output_dir: Path
) -> None:
    page = open_page(context)
    assert page.is_visible("[data-testid=consent-banner]")
    with page.expect_response(lambda response: response.url.endswith("/cart/add")) as posted:
        submit(page, "[data-testid=add-tea]")  # a session without consent...
    set_cookie = posted.value.header_value("set-cookie") or ""
    token = set_cookie.split(";", 1)[0].partition("=")[2]
    assert set_cookie.startswith(f"{COOKIE}={token};")
    assert "Max-Age" not in set_cookie  # ...gets a browser-session cookie only
    assert token.split(".")[1] == "0"  # (the signed consent flag)
    assert not redis_client.exists(shop.redis_key(token))  # ...and is not in the store
    # It lives in the memory of the worker that answered the POST: another
    # worker does not know the id and clears the cookie (opt-in mode's price).
    local_worker = posted.value.headers["x-worker-pid"]
    if field(page, "worker-pid") == local_worker:
        assert field(page, "count-tea") == "1"
    page.screenshot(path=str(output_dir / "consent-banner.png"), full_page=True)

    visit(page, "/state")
    assert field(page, "consented") == "False"
    assert field(page, "mode") == "opt_in"

    submit(page, "[data-testid=consent-banner] button[value=accept]")
    assert not page.is_visible("[data-testid=consent-banner]")
    assert field(page, "consented") == "True"
    assert field(page, "where").startswith("in the session store")
    cookie = session_cookie(context)
    assert cookie is not None
    key = shop.redis_key(cookie["value"])
    assert redis_client.exists(key)  # consent carried in the signed token: stored now
    assert cookie["value"].split(".")[1] == "1"

    submit(page, "[data-testid=withdraw]")
    assert field(page, "consented") == "False"
    assert not redis_client.exists(key)  # withdrawn: out of the store
    assert not page.is_visible("[data-testid=consent-banner]")  # the refusal is remembered
    assert "example_consent=declined" in page.evaluate("document.cookie")


def test_header_mode_api_uses_no_cookie(context: BrowserContext) -> None:
    page = open_page(context)
    result = page.evaluate(
        """async () => {
            const post = await fetch("/api/cart", {method: "POST",
                headers: {"Content-Type": "application/json"}, body: JSON.stringify({item: "bread"})});
            const token = post.headers.get("X-Session-Token");
            const get = await fetch("/api/", {headers: {"X-Session-Token": token}});
            const bare = await fetch("/api/");
            return {status: post.status, token, vary: post.headers.get("Vary"),
                    body: await get.json(), bare: await bare.json()};
        }"""
    )
    assert result["status"] == 201
    assert result["token"].count(".") == 3  # the token is readable by scripts in header mode
    assert result["vary"] == "X-Session-Token"
    assert result["body"]["session"] == {"cart": ["bread"]}
    assert result["body"]["is_new"] is False
    assert result["bare"]["session"] == {}  # without the header: no session
    assert context.cookies() == []  # and no cookie at all


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_host_prefix_cookie_works_on_http_loopback(chromium: Browser, secure_shop: Shop, host: str) -> None:
    """Chromium treats http://127.0.0.1 and http://localhost as potentially
    trustworthy: it stores a ``Secure`` ``__Host-`` cookie from them and sends
    it back over plain HTTP, so the login sticks."""
    base = f"http://{host}:{secure_shop.port}"
    context = chromium.new_context(base_url=base)
    try:
        page = open_page(context)
        assert page.evaluate("window.isSecureContext") is True
        log_in(page, "erin")
        cookie = session_cookie(context, "__Host-session")
        assert cookie is not None
        assert cookie["secure"] is True
        assert cookie["path"] == "/"
        assert cookie["domain"] == host  # host-only, as __Host- demands
        assert session_cookie(context) is None
        reload(page)
        assert who(page) == "logged in as erin"
    finally:
        context.close()


def test_host_prefix_cookie_is_dropped_on_plain_http_elsewhere(
    launch: t.Callable[..., Browser], secure_shop: Shop
) -> None:
    """Any other http:// origin (here shop.example, which this Chromium
    resolves to 127.0.0.1) is not trustworthy: the Secure cookie is silently
    refused, every request starts a new session, the login never sticks."""
    browser = launch("--host-resolver-rules=MAP shop.example 127.0.0.1")
    context = browser.new_context(base_url=f"http://shop.example:{secure_shop.port}")
    page = open_page(context)
    assert page.evaluate("window.isSecureContext") is False
    page.fill("[data-testid=login-form] input[name=username]", "frank")
    with page.expect_response(lambda response: response.url.endswith("/login")) as login:
        submit(page, "[data-testid=login-form] button")
    assert (login.value.header_value("set-cookie") or "").startswith("__Host-session=")  # sent...
    assert context.cookies() == []  # ...and refused
    assert who(page) == "not logged in"


def test_state_page_screenshot(context: BrowserContext, output_dir: Path) -> None:
    page = open_page(context)
    log_in(page, "grace", remember=True)
    for item in ("cheese", "tea", "tea"):
        submit(page, f"[data-testid=add-{item}]")
    page.screenshot(path=str(output_dir / "shop-page.png"), full_page=True)
    visit(page, "/state")
    assert field(page, "consented") == "True"
    assert field(page, "longterm") == "True"
    assert field(page, "cookie-HttpOnly") == "True"
    assert field(page, "cookie-sent") == "True"
    assert field(page, "value-user") == '"grace"'
    assert field(page, "value-cart") == '["cheese", "tea", "tea"]'
    assert page.is_visible("[data-testid=record]")
    target = output_dir / "state-page.png"
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000
