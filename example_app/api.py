"""The JSON API, mounted at ``/api``: sessions in header mode ("REST mode").

A second small Flask app with its own :class:`~wsgi_session.SessionMiddleware`
configured with ``transport="header"``: the token travels in the
``X-Session-Token`` request header, and a response carries it in the same
header when it is new or changed (an empty value: drop it). No cookie is
involved, so this suits scripts and mobile clients; in a browser the token is
readable by JavaScript, unlike the shop's ``HttpOnly`` cookie.

Its sessions are kept apart from the shop's (their own key prefix or table)
and use ``mode="persistent"``: an API client has no banner to click.

=========================  ==================================================
``GET /api/``              the session: id prefix, ``is_new``, data, worker
``POST /api/cart``         ``{"item": "apple"}``: append to ``session["cart"]``
``DELETE /api/session``    ``destroy()``: the answer carries an empty token
=========================  ==================================================
"""

from __future__ import annotations

import os
import typing as t

import flask
from flask import Flask, jsonify, request

from wsgi_session import SessionConfig
from wsgi_session.contrib.flask import WsgiSession

if t.TYPE_CHECKING:
    from flask.wrappers import Response

    from wsgi_session.contrib.flask import FlaskSession
    from wsgi_session.stores.base import Store

    from .settings import StoreInfo

HEADER = "X-Session-Token"
session = t.cast("FlaskSession", flask.session)  # flask.session, typed


def create_api(
    secret_keys: t.Sequence[str | bytes], store: Store, info: StoreInfo, products: t.Mapping[str, str]
) -> Flask:
    """The API app; ``secret_keys`` sign its tokens (the shop's keys),
    ``products`` are the items the cart accepts."""
    api = Flask(__name__)
    config = SessionConfig(secret_keys=list(secret_keys), transport="header", header_name=HEADER)
    WsgiSession(config=config, store=store).init_app(api)

    @api.after_request
    def add_worker_header(response: Response) -> Response:
        response.headers["X-Worker-Pid"] = str(os.getpid())
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @api.get("/")
    def show() -> Response:
        """The session as JSON (reading creates nothing)."""
        return jsonify(
            session={key: session[key] for key in session},
            id_prefix=session.id[:8],
            is_new=session.is_new,
            worker_pid=os.getpid(),
            transport=f"header {HEADER}",
            store=f"{info.kind} {info.where}: {info.location}",
        )

    @api.post("/cart")
    def add() -> Response | tuple[Response, int]:
        """Append ``item`` to the cart: a nested change, saved as is."""
        body = request.get_json(silent=True) or {}
        item = body.get("item") if isinstance(body, dict) else None
        if item not in products:
            return jsonify(error=f"item must be one of {sorted(products)}"), 400
        session.setdefault("cart", []).append(item)
        return jsonify(cart=session["cart"]), 201

    @api.delete("/session")
    def destroy() -> Response:
        """End the session; the response's empty token tells the client."""
        session.destroy()
        return jsonify(destroyed=True)

    return api
