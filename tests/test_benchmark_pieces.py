"""The new visitor's pieces, timed alone (``benchmarks/pieces.py``)."""

from __future__ import annotations

import typing as t

import pytest

from benchmarks.pieces import main, pieces


def test_every_piece_does_its_work() -> None:
    results = [piece() for piece in pieces().values()]
    view, encoded, session_id, token = results[:4]
    assert isinstance(view, bytes)
    assert view.startswith(b"n=1;tag=")
    counter, blob, tag = t.cast("tuple[bytes, bytes, bytes]", encoded)
    assert counter == b"1"
    assert len(blob) > 1024
    assert len(tag) == 10  # 8 hex digits, quoted
    assert isinstance(session_id, str)
    assert len(session_id) == 32
    assert isinstance(token, str)
    assert token.startswith(f"{token.split('.', 1)[0]}.0.")
    assert token.count(".") == 3


def test_the_report_lists_each_piece_and_their_sum(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--number", "200"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("wsgi_session: ")
    timings = [float(line.split()[0]) for line in lines[1:]]
    assert len(timings) == 6
    assert all(micros > 0 for micros in timings)
    # Each of the six printed figures is rounded to 0.01: the five pieces'
    # sum may differ from the printed total by up to 6 x 0.005 (CI once saw 0.02).
    assert timings[-1] == pytest.approx(sum(timings[:-1]), abs=0.0301)
