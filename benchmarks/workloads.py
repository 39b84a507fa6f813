"""What each request of a measurement does: a path of :mod:`benchmarks.apps`
and the cookie it is sent with.

==============  ==========  =================================================
workload        path        the request
==============  ==========  =================================================
plain           /plain      baselines only: no session, no cookie
plain + cookie  /plain      the plain WSGI baseline under gunicorn: a fixed
                            cookie the size of a session's, which it ignores
untouched       /plain      a session subject whose app never uses it
read            /read       returning visitor, session ``n`` + 1 KB string
increment       /inc        returning visitor, ``n += 1``
new visitor     /inc        no cookie: creates ``n`` + 1 KB string
read 20 KB      /read20k    returning visitor, session ``n`` + 20 KB string
round trip      /rtt        the RTT references: one store round trip
2 round trips   /rtt2       the RTT references under gunicorn: two in a row
==============  ==========  =================================================

A returning visitor's cookie comes from one priming request to the same path
(which creates the session), so every session is the standard one.

``plain + cookie`` separates what a session's cookie costs the server (gunicorn
parses one more request header) from what the session middleware costs: the
bare app is the limit of requests that carry no cookie, this is the limit of
requests that carry one.

``2 round trips`` is what a strict write's round trips (a read and a write)
cost a gunicorn worker when two plain client calls make them, with no
session code around them: a reference for the strict increments, not a
bound (a leaner client path than redis-py's, like ours, can beat it).
"""

from __future__ import annotations

import dataclasses
import typing as t


@dataclasses.dataclass(frozen=True)
class Workload:
    """One kind of request.

    :param name: shown in tables.
    :param path: the path requested.
    :param role: the subjects that run it (a :data:`benchmarks.subjects.Role`).
    :param returning: send the cookie of a session a priming request created.
    :param creates: every request creates a session; the store is cleared
        between runs (and the workload gets a target of its own).
    :param wants_set_cookie: whether wsgi_session's steady-state response
        must carry ``Set-Cookie`` (its "no noise" promise, checked once).
    :param check: what is checked on every response of the load test, and
        on a few before and after measuring in process (``"inc"``: the
        counter goes up by one; ``"read"``: it stays 0).
    :param cookie: a fixed ``Cookie`` header the load test sends with every
        request (baselines only; a session's own cookie comes from the server).
    """

    name: str
    path: str
    role: str = "session"
    returning: bool = False
    creates: bool = False
    wants_set_cookie: bool = False
    check: t.Literal["", "inc", "read"] = ""
    cookie: str = ""


#: A cookie of the name and length of wsgi_session's (id, flags, issue time,
#: signature), which no subject ever verifies: the baselines ignore it.
SESSION_SIZED_COOKIE = "session=" + "A" * 32 + ".0.6b085bca." + "B" * 43

PLAIN = Workload("plain", "/plain", role="baseline")
PLAIN_COOKIE = Workload("plain + cookie", "/plain", role="baseline", cookie=SESSION_SIZED_COOKIE)
UNTOUCHED = Workload("untouched", "/plain")
READ = Workload("read", "/read", returning=True, check="read")
INCREMENT = Workload("increment", "/inc", returning=True, check="inc")
NEW_VISITOR = Workload("new visitor", "/inc", creates=True, wants_set_cookie=True, check="inc")
READ_20K = Workload("read 20 KB", "/read20k", returning=True, check="read")
ROUND_TRIP = Workload("round trip", "/rtt", role="rtt")
TWO_ROUND_TRIPS = Workload("2 round trips", "/rtt2", role="rtt")

#: Everything measured in process, in table order.
IN_PROCESS: list[Workload] = [PLAIN, ROUND_TRIP, UNTOUCHED, READ, INCREMENT, NEW_VISITOR, READ_20K]
#: Under gunicorn: the limits without and with a cookie, a read-only request and a write;
#: for the round-trip references, the least a request with one or two round trips costs.
UNDER_LOAD: list[Workload] = [PLAIN, PLAIN_COOKIE, READ, INCREMENT, ROUND_TRIP, TWO_ROUND_TRIPS]
