"""A new visitor's unavoidable pieces, each timed alone.

A new visitor's request does work a returning visitor's does not: the view
fills the session, its values are encoded, an id is drawn from the OS's
CSPRNG, a token is signed and a ``Set-Cookie`` header written. This times
each piece on its own with :mod:`timeit`, through the same functions the
middleware calls, so the in-process new-visitor figure can be read as these
pieces plus the bookkeeping around them::

    python benchmarks/pieces.py
    python benchmarks/pieces.py --number 20000

It measures whichever build of wsgi_session is imported (see the README).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import timeit
import typing as t
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.apps import BLOB_1K, session_view
from benchmarks.settings import SECRET
from wsgi_session._mypyc import is_compiled
from wsgi_session.config import SessionConfig
from wsgi_session.manager import _default_id
from wsgi_session.serialization import TaggedJSONSerializer
from wsgi_session.signing import Token, TokenSigner
from wsgi_session.transport import CookieTransport


def pieces() -> dict[str, t.Callable[[], object]]:
    """Each piece of a new visitor's work, by what it is, as a callable."""
    config = SessionConfig(secret_keys=[SECRET])
    serializer = TaggedJSONSerializer()
    signer = TokenSigner(config.signing_keys)
    transport = CookieTransport(config)
    token = Token(_default_id(), False, 1_700_000_000)
    signed = signer.dumps(token)
    tag = secrets.token_hex(4)
    return {
        "the view's work on a plain dict (with its tag from secrets.token_hex)": lambda: session_view(
            "/inc", {}, None
        ),
        "encoding the three values (a counter, 1 KB of text, the tag)": lambda: (
            serializer.dumps(1),
            serializer.dumps(BLOB_1K),
            serializer.dumps(tag),
        ),
        "the id: 24 bytes of os.urandom, URL-safe base64": _default_id,
        "the signed token (HMAC-SHA256 of id, flags and time)": lambda: signer.dumps(token),
        "the Set-Cookie header": lambda: transport.send([], signed, None),
    }


def measure(number: int, repeat: int = 5) -> list[tuple[str, float]]:
    """µs per call of each piece: the best of ``repeat`` runs of ``number`` calls."""
    return [
        (name, min(timeit.repeat(piece, number=number, repeat=repeat)) / number * 1e6)
        for name, piece in pieces().items()
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A new visitor's pieces, each timed alone.")
    parser.add_argument("--number", type=int, default=100_000, help="calls per timed run (100000)")
    args = parser.parse_args(argv)
    timings = measure(args.number)
    print(f"wsgi_session: {'compiled' if is_compiled() else 'pure Python'}; µs per call, best of 5 runs")
    for name, micros in timings:
        print(f"{micros:7.2f}  {name}")
    print(f"{sum(micros for _, micros in timings):7.2f}  together")


if __name__ == "__main__":
    main()
