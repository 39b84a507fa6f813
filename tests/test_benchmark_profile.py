"""The benchmark profile's attribution of py-spy samples (benchmarks/profiling.py).

The stacks are written by hand in py-spy's raw format (``--threads``: the
thread label ``thread (id): name`` first, then the frames outermost first,
then the sample count), so each test knows exactly which answer is right.
"""

from __future__ import annotations

import json

import pytest

from benchmarks.profiling import bucket, child, owner, summarize, summarize_cpu
from benchmarks.stacks import samples
from wsgi_session._mypyc import COMPILED_MODULES
from wsgi_session.stores._resp import LeanPath

_MAIN = "thread (7001): MainThread"
_FLUSH = "thread (7002): wsgi-session-flush"
_RUN = "<module> (benchmarks/profiling.py:1);run_batch (benchmarks/cases.py:210)"
_CALL = "SessionMiddleware.__call__ (/x/wsgi_session/middleware.py:140)"
_MEASURED = {
    "case": "wsgi_session[memory] / increment",
    "requests": 1000,
    "seconds": 0.02,
    "recorder": "py-spy record --nonblocking --rate 1000",
}


def stack(*frames: str, count: int, thread: str = _MAIN, loop: bool = True) -> str:
    return ";".join((thread, *((_RUN,) if loop else ()), *frames)) + f" {count}"


def test_a_sample_is_charged_to_the_innermost_wsgi_session_function():
    frames = [
        ("run_batch", "benchmarks/cases.py"),
        ("SessionMiddleware.__call__", "/x/wsgi_session/middleware.py"),
        ("apply_diff", "/x/wsgi_session/record.py"),
        ("copy", "/usr/lib/python3.11/copy.py"),  # the standard library counts for its caller
    ]
    assert owner(frames) == "`record:apply_diff`"
    assert owner(frames[:1]) == "the benchmark app and loop"
    assert owner([("select", "/usr/lib/python3.11/selectors.py")]) == "other"


def test_cpu_summary_counts_only_the_measured_loop_of_the_request_thread():
    raw = "\n".join(
        [
            stack(_CALL, "apply_diff (/x/wsgi_session/record.py:150)", count=3),
            stack(_CALL, count=1),
            # Outside the measured loop (set-up), and the flush thread (even
            # under a frame of the same name): not counted.
            stack("<module> (benchmarks/profiling.py:1)", count=50, loop=False),
            stack("wait (/usr/lib/python3.11/threading.py:320)", count=50, thread=_FLUSH),
        ]
    )
    text = summarize_cpu(raw, _MEASURED)
    assert "4 samples of the request thread" in text
    assert "| `record:apply_diff` | 75.0% |" in text
    assert "| `middleware:SessionMiddleware.__call__` | 25.0% |" in text


def test_round_trip_summary_separates_waiting_from_cpu():
    read = "SessionManager.load (/x/wsgi_session/manager.py:190);read_response (/v/redis/connection.py:600)"
    raw = "\n".join(
        [
            stack(_CALL, read, count=8),
            stack(_CALL, "RedisStore.apply (/x/wsgi_session/stores/redis.py:170)", count=2),
            stack("wait (/usr/lib/python3.11/threading.py:320)", count=30, thread=_FLUSH, loop=False),
            stack(
                "RedisStore.apply (/x/wsgi_session/stores/redis.py:170)", count=10, thread=_FLUSH, loop=False
            ),
        ]
    )
    measured = {
        **_MEASURED,
        "case": "wsgi_session[redis] / increment",
        "seconds": 0.4,
        "waits_us": {"HGET": 150.0, "EVALSHA": 200.0},
        "medians_us": {"HGET": 140.0, "EVALSHA": 190.0},
        "server_us": {"EVALSHA": 20.0, "HGET": 1.0},
    }
    text = summarize(raw, measured)
    assert "| round trip: waiting for the reply | 80.0% | 320 |" in text
    assert "| CPU: wsgi_session.stores.redis | 20.0% | 80 |" in text
    assert "= 350 µs of the 400 µs" in text
    assert "`EVALSHA` 20.0 µs, `HGET` 1.0 µs" in text
    # The flush thread's samples are reported apart, not in the request's shares.
    assert (
        "Flush thread: 40 samples (blocked: lock / condition wait 75%, CPU: wsgi_session.stores.redis 25%)"
        in text
    )


def test_a_lean_path_read_blocked_in_recv_is_waiting_not_cpu():
    """The lean path blocks in ``_Reader._fill`` (``sock.recv``): such samples
    are the round trip, not the path's CPU (they were, until this test)."""
    lean = "/x/wsgi_session/stores/_resp.py"
    waiting = f"LeanPath._round_trip ({lean}:295);_receive ({lean}:185);_Reader._fill ({lean}:138)"
    frames = _frames_of(stack(_CALL, waiting, count=1))
    assert bucket(frames) == "round trip: waiting for the reply"
    parsing = f"LeanPath._round_trip ({lean}:295);_receive ({lean}:185);_Reader.reply ({lean}:150)"
    assert bucket(_frames_of(stack(_CALL, parsing, count=1))) == "CPU: wsgi_session.stores._resp"


def _frames_of(line: str) -> list[tuple[str, str]]:
    [(_, frames, _)] = list(samples(line))
    return frames


def test_native_frames_of_compiled_modules_are_charged_as_their_python_functions():
    """py-spy ``--native`` of the compiled build: mypyc's C functions count as
    the functions they were compiled from, the interpreter's own C frames
    for the wsgi_session function that called them."""
    native = "__native_3d8fa6970dd69ee5e114.c"
    raw = "\n".join(
        [
            stack(
                _CALL,
                f"CPyPy_manager___SessionManager___commit ({native}:100)",
                f"CPyDef_memory___MemoryStore___apply ({native}:44509)",
                "PyDict_SetItem (libpython3.11.so.1.0)",
                count=3,
            ),
            stack(_CALL, f"CPyDef_record___apply_diff ({native}:200)", count=1),
            stack(_CALL, "CPyDef_other___thing (elsewhere.c:1)", count=1),  # not ours: its caller
        ]
    )
    text = summarize_cpu(raw, _MEASURED)
    assert "| `stores/memory:MemoryStore.apply` | 60.0% |" in text
    assert "| `record:apply_diff` | 20.0% |" in text
    assert "| `middleware:SessionMiddleware.__call__` | 20.0% |" in text


_RECORD = "wsgi_session/record.py"


@pytest.mark.parametrize(
    ("frame", "source"),
    [
        ("CPyDef_record___SessionDiff (n.c:1)", ("SessionDiff (constructor)", "wsgi_session/record.py")),
        (
            "CPyDef_record___SessionDiff_____init__ (n.c:1)",
            ("SessionDiff.__init__", "wsgi_session/record.py"),
        ),
        ("CPyDef_session___Session____load.part.0 (n.c:9)", ("Session._load", "wsgi_session/session.py")),
        ("CPyDef_cache___ShardedCache___get.cold (lib.so)", ("ShardedCache.get", "wsgi_session/cache.py")),
        ("CPyDef_codec___loads (n.c:1)", ("CPyDef_codec___loads", "n.c")),  # not a compiled module
        ("CPyDef__exchange___add_vary (n.c:5)", ("add_vary", "wsgi_session/_exchange.py")),
        (
            "CPyDef__exchange___Exchange___send_headers (n.c:5)",
            ("Exchange.send_headers", "wsgi_session/_exchange.py"),
        ),
        ("CPyDef_session___Session___clear (n.c:5)", ("Session.clear", "wsgi_session/session.py")),
        ("CPyDef_session___Session_clear (n.c:5)", ("Session (freed)", "wsgi_session/session.py")),
        ("CPyDef__exchange___Exchange_clear (n.c:5)", ("Exchange (freed)", "wsgi_session/_exchange.py")),
        ("CPyDef__exchange___Exchange (n.c:5)", ("Exchange (constructor)", "wsgi_session/_exchange.py")),
        ("CPyDef_record____Deadline (n.c:5)", ("_Deadline (constructor)", "wsgi_session/record.py")),
        # mypyc's helpers of a class are not its constructor
        (
            "CPyDef_session___Session_trait_vtable_setup (n.c:5)",
            ("Session_trait_vtable_setup", "wsgi_session/session.py"),
        ),
    ],
)
def test_compiled_frame_names(frame: str, source: tuple[str, str]) -> None:
    assert _frames_of(stack(frame, count=1, loop=False))[-1] == source


def test_compiled_modules_have_distinct_last_names():
    """mypyc names C functions after a module's last name part only."""
    assert len({name.rsplit("/", 1)[-1] for name in COMPILED_MODULES}) == len(COMPILED_MODULES)


@pytest.mark.redis
def test_the_profiled_redis_child_times_each_round_trip(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child process py-spy records: on Redis it times the store's round
    trips by command (its wrapper of the lean path must keep the path's
    signature: a stale one made every Redis profile fail)."""
    monkeypatch.setattr(LeanPath, "call", LeanPath.call)  # the child replaces it: put it back after
    child(0.2, "ws-redis", "INCREMENT")
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["requests"] > 0
    assert set(result["waits_us"]) == {"HGET", "EVALSHA"}
    assert all(wait > 0 for wait in result["waits_us"].values())
