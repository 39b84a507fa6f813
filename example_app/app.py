"""The example shop: log in, remember me, a cart, a consent banner, a state page.

A plain Flask application on the :class:`~wsgi_session.contrib.flask.WsgiSession`
extension, so the views use ``flask.session`` and ``flash()`` as usual while
the data stays on the server (see :mod:`example_app.settings` for where).

* ``POST /login`` — ``session.renew()`` (a new id: session-fixation defence),
  the user name, ``session.permanent`` for "remember me" (a persistent
  cookie, :data:`REMEMBER_FOR`); logging in counts as consent.
* ``POST /logout`` — ``session.destroy()``: the stored session is deleted and
  the cookie cleared; the old token is worthless from then on.
* ``POST /cart/add`` — ``session["cart"].append(item)``: a nested change,
  saved without ``session.modified = True``.
* ``POST /consent`` — the banner. The app runs in ``mode="opt_in"``: until the
  visitor accepts (``session.set_store(True)``, carried in the signed token)
  the session lives only in the memory of the worker process that created it.
* ``GET /state`` — what the session holds, where, and the cookie's attributes.
* ``/api/...`` — a JSON API in header mode (:mod:`example_app.api`).

Every response carries the serving worker's pid in ``X-Worker-Pid``.
``gunicorn example_app.app:app`` serves :data:`app`, which is created on first
access, so importing :func:`create_app` has no side effects.
"""

from __future__ import annotations

import collections
import json
import os
import typing as t
from datetime import UTC, datetime, timedelta

import flask
from flask import Flask, abort, current_app, flash, redirect, render_template, request, url_for
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from wsgi_session.contrib.flask import WsgiSession

from . import settings
from .api import create_api

if t.TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from wsgi_session import SessionConfig
    from wsgi_session.contrib.flask import FlaskSession

#: ``flask.session`` (the same proxy), typed as what WsgiSession makes it: a
#: FlaskSession, with renew(), destroy(), set_store(), consented...
session = t.cast("FlaskSession", flask.session)
#: The application gunicorn serves, created on first access (see __getattr__).
app: Flask

#: "Remember me": how long a long-term session (and its cookie) lasts.
REMEMBER_FOR = timedelta(days=30)
#: An ordinary session's idle timeout.
IDLE_TIMEOUT = timedelta(hours=2)
MAX_USERNAME = 64
#: The plain cookie that remembers a declined banner (readable by JavaScript).
CONSENT_COOKIE = "example_consent"

PRODUCTS: dict[str, str] = {
    "apple": "Apple",
    "bread": "Bread",
    "cheese": "Cheese",
    "coffee": "Coffee",
    "tea": "Tea",
}


def create_app(config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """The shop, with the header-mode API mounted at ``/api``.

    Configuration, later wins: the defaults below, ``FLASK_*`` environment
    variables (Flask's ``from_prefixed_env``: ``FLASK_SESSION_COOKIE_SECURE=true``,
    ``FLASK_WSGI_SESSION_CONFIG__cookie_host_prefix=true``...), then ``config``.
    The store comes from ``WSGI_SESSION_STORE_URL`` (:mod:`example_app.settings`).
    """
    app = Flask(__name__)
    app.config.update(
        PERMANENT_SESSION_LIFETIME=REMEMBER_FOR,
        SESSION_COOKIE_SAMESITE="Lax",
        WSGI_SESSION_CONFIG={"mode": "opt_in", "lifetime": IDLE_TIMEOUT},
    )
    app.config.from_prefixed_env()
    app.config.update(config or {})
    if not app.config.get("SECRET_KEY"):
        keys = settings.secret_keys()
        app.config["SECRET_KEY"] = keys[0]
        app.config["SECRET_KEY_FALLBACKS"] = keys[:0:-1]  # Flask lists them oldest first

    url = settings.store_url()
    store, store_info = settings.make_store(url, "session")
    middleware = WsgiSession(store=store).init_app(app)
    api_store, api_info = settings.make_store(url, "api")
    api = create_api(middleware.config.secret_keys, api_store, api_info, PRODUCTS)
    app.extensions["example_app"] = {"store": store_info, "api": api}

    app.before_request(refuse_cross_site_posts)
    app.after_request(add_worker_header)
    app.context_processor(page_context)
    app.add_url_rule("/", view_func=index)
    app.add_url_rule("/state", view_func=state)
    app.add_url_rule("/login", view_func=login, methods=["POST"])
    app.add_url_rule("/logout", view_func=logout, methods=["POST"])
    app.add_url_rule("/cart/add", view_func=cart_add, methods=["POST"])
    app.add_url_rule("/cart/remove", view_func=cart_remove, methods=["POST"])
    app.add_url_rule("/consent", view_func=consent, methods=["POST"])
    # Wrapping the session middleware is fine; replacing it is not.
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/api": api})  # type: ignore[method-assign]
    return app


# -- request plumbing ---------------------------------------------------------


def refuse_cross_site_posts() -> None:
    """A small CSRF guard: browsers say where a request comes from in
    ``Sec-Fetch-Site``; refuse POSTs another site triggered (``SameSite=Lax``
    already keeps the cookie off them). A real app adds CSRF tokens."""
    if request.method == "POST" and request.headers.get("Sec-Fetch-Site") == "cross-site":
        abort(403)


def add_worker_header(response: Response) -> Response:
    """``X-Worker-Pid``: which gunicorn worker answered; pages are private."""
    response.headers["X-Worker-Pid"] = str(os.getpid())
    response.headers.setdefault("Cache-Control", "private, no-store")
    return response


def session_config() -> SessionConfig:
    return WsgiSession.get_middleware().config


def opt_in() -> bool:
    return session_config().mode == "opt_in"


def page_context() -> dict[str, t.Any]:
    """What every page shows: the user, the banner, the worker."""
    show_banner = opt_in() and not session.consented and request.cookies.get(CONSENT_COOKIE) != "declined"
    return {
        "user": session.get("user"),
        "show_banner": show_banner,
        "worker_pid": os.getpid(),
        "store": current_app.extensions["example_app"]["store"],
        "remember_days": session_config().longterm_lifetime.days,
        "products": PRODUCTS,
    }


def back(default: str = "index") -> Response:
    """303 to the page the form was on (same site only), else ``default``."""
    target = request.form.get("next", "")
    if not target.startswith("/") or target.startswith("//"):
        target = url_for(default)
    return redirect(target, 303)


# -- pages -------------------------------------------------------------------


def index() -> str:
    """The shop: login form or greeting, products, the cart."""
    cart = collections.Counter(session.get("cart", []))
    return render_template("index.html", cart=cart, max_username=MAX_USERNAME)


def state() -> str:
    """Everything about the session: identity, flags, data, storage, cookie."""
    return render_template("state.html", **describe_session())


def describe_session() -> dict[str, t.Any]:
    config = session_config()
    stored = not session.is_new
    persisted = stored and (not opt_in() or session.consented)
    record = session.advanced.record(session.id) if stored else None
    cookie_name = config.effective_cookie_name
    if opt_in() and not session.consented:
        lifetime = "a browser-session cookie (no consent: never persistent)"
    elif session.permanent:
        lifetime = f"persistent: Max-Age {config.longterm_lifetime.days} days (remember me)"
    else:
        lifetime = "a browser-session cookie (no Max-Age): gone when the browser closes"
    return {
        "id_prefix": session.id[:8],
        "is_new": session.is_new,
        "stored": stored,
        "persisted": persisted,
        "longterm": session.permanent,
        "consented": session.consented,
        "mode": config.mode,
        "items": [(key, json.dumps(session[key], default=repr)) for key in sorted(session)],
        "record": {
            "created": _time(record["created"]),
            "expires (idle deadline)": _time(record["expires"]),
            "absolute deadline": _time(record["absolute"]),
            "longterm": record["longterm"],
            "version": record["version"],
        }
        if record
        else None,
        "cookie": {
            "name": cookie_name,
            "Path": config.cookie_path,
            "Domain": config.cookie_domain or "(none: host-only)",
            "Secure": config.cookie_secure,
            "HttpOnly": config.cookie_http_only,
            "SameSite": config.cookie_same_site or "(not set)",
            "Partitioned": config.cookie_partitioned,
            "lifetime": lifetime,
        },
        "cookie_sent": cookie_name in request.cookies,
        "idle_timeout": config.longterm_lifetime if session.permanent else config.lifetime,
    }


def _time(epoch: float | None) -> str:
    if epoch is None:
        return "none"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- actions -------------------------------------------------------------------


def login() -> Response:
    """New id, the user, "remember me"; logging in is consent to storage."""
    username = request.form.get("username", "").strip()
    if not username or len(username) > MAX_USERNAME:
        flash(f"Enter a username of 1 to {MAX_USERNAME} characters.", "error")
        return back()
    session.renew()  # fixation defence: the pre-login token dies now
    session["user"] = username
    session.permanent = request.form.get("remember") == "1"
    session.set_store(True)  # a login needs a stored session: strictly necessary
    flash(f"Welcome, {username}.", "info")
    return back()


def logout() -> Response:
    """Delete the session and the cookie (a flash would be discarded too)."""
    session.destroy()
    return redirect(url_for("index", bye=1), 303)


def cart_add() -> Response:
    """A nested change: ``append`` on the stored list, no ``modified`` flag."""
    item = request.form.get("item", "")
    if item not in PRODUCTS:
        abort(400)
    if "cart" not in session:
        session["cart"] = []
    session["cart"].append(item)
    flash(f"{PRODUCTS[item]} added to your cart.", "info")
    return back()


def cart_remove() -> Response:
    """Take one of ``item`` out of the cart (again a nested change)."""
    item = request.form.get("item", "")
    if item in session.get("cart", []):
        session["cart"].remove(item)
    return back()


def consent() -> Response:
    """The banner: ``accept``, ``decline`` or ``withdraw``."""
    choice = request.form.get("choice")
    response = back()
    if choice == "accept":
        session.set_store(True)
        if CONSENT_COOKIE in request.cookies:
            response.delete_cookie(CONSENT_COOKIE)
        flash("Thank you: your session is now kept in the session store.", "info")
    elif choice in ("decline", "withdraw"):
        if "user" in session:  # a login needs storage
            session.pop("user")
            session.permanent = False
        session.set_store(False)
        if choice == "withdraw":
            flash("Consent withdrawn: your session left the store and lives in this worker only.", "info")
        # Remember the refusal in a plain cookie, so the banner stays away.
        response.set_cookie(CONSENT_COOKIE, "declined", samesite="Lax", max_age=180 * 86400)
    else:
        abort(400)
    return response


def __getattr__(name: str) -> t.Any:
    """``app``: one application, created on first access (for gunicorn)."""
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
