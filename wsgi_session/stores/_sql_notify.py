"""PostgreSQL ``NOTIFY`` and ``LISTEN`` for ``coherence="notify"``: how
:class:`~wsgi_session.stores.SQLAlchemyStore` announces the sessions it
wrote, and hears of the ones other processes wrote. Private to the SQL store.

An announcement is the payload ``"<origin> <id> [<id> ...]"`` on the store's
channel; the origin lets a process ignore its own. PostgreSQL delivers a
notification when the transaction that sent it commits, so an announcement
is sent in the statement or transaction that wrote: listeners hear of a
change only once it is visible, and never of one that rolled back.
"""

from __future__ import annotations

import itertools
import select
import threading
import typing as t

import sqlalchemy as sa

if t.TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.sql.dml import Insert, Update

#: Most ids in one payload (ids have at most 128 characters; PostgreSQL
#: takes payloads under 8000 bytes).
_IDS_PER_PAYLOAD = 50
#: The prefix of the parameters an announcing write binds its columns to.
_BOUND = "new_"
#: How often :func:`listen_postgres` looks at its ``stop`` event.
_POLL_SECONDS = 0.25


class Announcer:
    """Announces a store's writes on ``channel`` as coming from ``origin``."""

    def __init__(self, channel: str, origin: str, table: sa.Table) -> None:
        self.channel = channel
        self.origin = origin
        self._table = table
        #: Each write statement's announcing twin, by the parameters it takes.
        self._twins: dict[tuple[Update | Insert, tuple[str, ...]], sa.Select[t.Any]] = {}

    def _twin(self, write: Update | Insert, names: tuple[str, ...]) -> sa.Select[t.Any]:
        """``write`` as ``WITH written AS (<write> RETURNING id) SELECT
        pg_notify(:channel, :payload) FROM written``: one statement, so in
        autocommit the write and its ``NOTIFY`` commit together, and a row
        comes back (and a notification goes) only if it wrote. In a CTE the
        written columns are not taken from the execution's parameters
        (``names``), so they are bound explicitly, under names that cannot
        clash with the columns'."""
        columns = self._table.c
        values: dict[str, t.Any] = {name: sa.bindparam(_BOUND + name) for name in names if name in columns}
        written = write.values(values).returning(columns.id).cte("written")
        notify = sa.func.pg_notify(sa.bindparam("channel"), sa.bindparam("payload"))
        return sa.select(notify).select_from(written)

    def write(
        self, conn: Connection, write: Update | Insert, params: dict[str, t.Any], session_id: str
    ) -> bool:
        """Run ``write`` (of one row, ``session_id``'s, with ``params``)
        announcing it in the same statement; whether it wrote the row."""
        names = tuple(params)
        twin = self._twins.get((write, names))
        if twin is None:
            twin = self._twins[write, names] = self._twin(write, names)
        columns = self._table.c
        bound = {(_BOUND + name if name in columns else name): value for name, value in params.items()}
        bound.update(channel=self.channel, payload=f"{self.origin} {session_id}")
        return conn.execute(twin, bound).first() is not None

    def announce(self, conn: Connection, session_ids: t.Iterable[str]) -> None:
        """Announce ``session_ids`` in ``conn``'s transaction."""
        ids = iter(session_ids)
        while chunk := list(itertools.islice(ids, _IDS_PER_PAYLOAD)):
            conn.execute(sa.select(sa.func.pg_notify(self.channel, " ".join([self.origin, *chunk]))))


def listen_postgres(
    engine: sa.Engine,
    channel: str,
    on_message: t.Callable[[str, str], None],
    on_reset: t.Callable[[], None],
    stop: threading.Event,
) -> None:
    """``LISTEN`` on ``channel`` (psycopg2) on a connection of its own, taken
    from ``engine`` and detached from its pool, passing each announced id to
    ``on_message(origin, id)`` until ``stop`` is set. Driver errors propagate."""
    pooled = engine.raw_connection()
    pooled.detach()
    raw: t.Any = pooled.dbapi_connection
    try:
        raw.autocommit = True
        with raw.cursor() as cursor:
            cursor.execute('LISTEN "{}"'.format(channel.replace('"', '""')))
        on_reset()
        while not stop.is_set():
            if select.select([raw], [], [], _POLL_SECONDS)[0]:
                raw.poll()
                while raw.notifies:
                    origin, *session_ids = raw.notifies.pop(0).payload.split(" ")
                    for session_id in session_ids:
                        on_message(origin, session_id)
    finally:
        raw.close()
