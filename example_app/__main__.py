"""``python -m example_app``: serve the example with werkzeug's dev server."""

from __future__ import annotations

import argparse
import logging

from werkzeug.serving import run_simple

from . import settings
from .app import create_app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: ``--host`` and ``--port``."""
    parser = argparse.ArgumentParser(
        prog="python -m example_app", description="Serve the wsgi_session example (development only)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Build the app and serve it until interrupted."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = create_app()
    logging.getLogger("example_app").info("sessions in %s", settings.redact(settings.store_url()))
    run_simple(args.host, args.port, app, threaded=True)


if __name__ == "__main__":
    main()
