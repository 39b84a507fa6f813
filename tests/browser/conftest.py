"""Fixtures for the browser tests: the example app under gunicorn, headless Chromium.

* ``chromium`` (and ``launch`` for one with extra flags) — Debian's
  ``/usr/bin/chromium`` (``WSGI_SESSION_CHROMIUM`` overrides) driven by
  Playwright's Python package. Playwright's own browser download
  (``playwright install``) is never used.
* ``shop`` — ``example_app`` served by ``gunicorn -c example_app/gunicorn.conf.py``
  with 3 workers x 4 threads over the real Redis, under a key namespace unique
  to the run; ``--keep-alive 0`` so every request is a new connection and
  gunicorn's workers share them (a kept-alive connection stays on one worker).
* ``secure_shop`` — the same app with ``cookie_secure`` and the ``__Host-``
  prefix.
* ``output_dir`` — where screenshots and server logs go:
  ``$WSGI_SESSION_TEST_OUTPUT/browser``, default ``test-output/browser`` in the
  repository root (git-ignored).

The service rule applies (``tests/services.py``): without Chromium, Playwright
or Redis these tests are skipped with the reason, or fail when ``CI`` is set.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import typing as t
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from services import REDIS_URL, free_port, port_open, service_unavailable

if t.TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("WSGI_SESSION_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SECRET = "browser-test-secret-0123456789-abcdefghijkl"


class Shop(t.NamedTuple):
    """A running example app."""

    url: str
    port: int
    namespace: str
    process: subprocess.Popen[bytes]
    log: Path

    def redis_key(self, token: str) -> str:
        """The Redis key of the session a cookie token names (``id.flags.issued.sig``)."""
        return f"{self.namespace}:session:{token.split('.', 1)[0]}"


@pytest.fixture(scope="session")
def output_dir() -> Path:
    base = os.environ.get("WSGI_SESSION_TEST_OUTPUT") or str(ROOT / "test-output")
    path = Path(base) / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


def launch_chromium(playwright: t.Any, *extra_args: str) -> Browser:
    """Debian's Chromium, headless, with the flags that keep it off the network."""
    return t.cast(
        "Browser",
        playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, *extra_args]
        ),
    )


@pytest.fixture(scope="session")
def playwright() -> t.Iterator[t.Any]:
    """Playwright's sync API, or the service rule when it or Chromium is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_unavailable("the playwright package is not installed (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        service_unavailable(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def chromium(playwright: t.Any) -> t.Iterator[Browser]:
    """One headless Chromium for the whole run (each test opens its own context)."""
    browser = launch_chromium(playwright)
    yield browser
    browser.close()


@pytest.fixture
def launch(playwright: t.Any) -> t.Iterator[t.Callable[..., Browser]]:
    """``launch(*extra_args)``: another Chromium with more flags, closed after the test."""
    launched: list[Browser] = []

    def factory(*extra_args: str) -> Browser:
        launched.append(launch_chromium(playwright, *extra_args))
        return launched[-1]

    yield factory
    for browser in launched:
        browser.close()


def start_shop(name: str, output_dir: Path, workers: int, threads: int, **env: str) -> Shop:
    """gunicorn serving example_app over Redis; ``env`` adds variables."""
    port = free_port()
    namespace = f"wsgi_session_browser_{secrets.token_hex(4)}"
    log = output_dir / f"gunicorn-{name}.log"
    environment = {
        **os.environ,
        "WSGI_SESSION_STORE_URL": REDIS_URL,
        "WSGI_SESSION_STORE_NAMESPACE": namespace,
        "WSGI_SESSION_SECRET": SECRET,
        "PYTHONPATH": str(ROOT),
        **env,
    }
    command = [
        sys.executable, "-m", "gunicorn", "-c", "example_app/gunicorn.conf.py",
        "-b", f"127.0.0.1:{port}", "-w", str(workers), "--threads", str(threads), "--keep-alive", "0",
    ]  # fmt: skip
    if _gunicorn_has_control_socket():
        command.append("--no-control-socket")  # two test servers would share its path
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited early:\n{log.read_text()}")
        if port_open(port) and _answers(url):
            return Shop(url, port, namespace, process, log)
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"gunicorn did not start:\n{log.read_text()}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/", timeout=5) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _gunicorn_has_control_socket() -> bool:
    import gunicorn

    return int(gunicorn.__version__.split(".")[0]) >= 27


def stop_shop(shop: Shop, client: redis.Redis) -> None:
    shop.process.terminate()
    try:
        shop.process.wait(20)
    except subprocess.TimeoutExpired:
        shop.process.kill()
        shop.process.wait()
    keys = list(client.scan_iter(match=f"{shop.namespace}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="module")
def shop(redis_client: redis.Redis, output_dir: Path) -> t.Iterator[Shop]:
    """The example app: gunicorn, 3 workers x 4 threads, over Redis."""
    server = start_shop("shop", output_dir, workers=3, threads=4)
    yield server
    stop_shop(server, redis_client)


@pytest.fixture(scope="module")
def secure_shop(redis_client: redis.Redis, output_dir: Path) -> t.Iterator[Shop]:
    """The example app with ``cookie_secure=True`` and ``cookie_host_prefix=True``,
    set through Flask's ``FLASK_*`` environment variables (one worker)."""
    server = start_shop(
        "secure-shop",
        output_dir,
        workers=1,
        threads=4,
        FLASK_SESSION_COOKIE_SECURE="true",
        FLASK_WSGI_SESSION_CONFIG__cookie_host_prefix="true",
    )
    yield server
    stop_shop(server, redis_client)


@pytest.fixture
def context(chromium: Browser, shop: Shop) -> t.Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) pointed at the shop."""
    ctx = chromium.new_context(base_url=shop.url)
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()
