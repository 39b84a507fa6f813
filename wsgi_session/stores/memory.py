"""The default store: sessions in this process's memory, nothing beyond it.

Fast and dependency-free, for development, tests and single-process
deployments. Every worker process has its own sessions, and a restart loses
them all: use :class:`~wsgi_session.stores.RedisStore` or
:class:`~wsgi_session.stores.SQLAlchemyStore` under gunicorn with more than one
worker.
"""

from __future__ import annotations

import logging
import typing as t

from .._logging import RateLimitedLog
from .._mypyc import mypyc_attr
from ..cache import ShardedCache
from ..record import SessionRecord, apply_diff
from .base import Store

if t.TYPE_CHECKING:
    from ..record import SessionDiff
log = logging.getLogger(__name__)
_full = RateLimitedLog(log)


@mypyc_attr(allow_interpreted_subclasses=True)
class MemoryStore(Store):
    """Sessions in a lock-sharded dict of this process.

    Sessions stay until their own deadlines (purged by the middleware's sweep)
    or until ``max_entries`` is reached, when the least recently used leave
    first, with a warning in the log.

    :param max_entries: the most sessions kept. Default 100,000.
    :param shards: lock shards; a power of two. Default 16.
    """

    is_local = True

    def __init__(self, max_entries: int = 100_000, shards: int = 16) -> None:
        self._data: ShardedCache[SessionRecord] = ShardedCache(
            shards=shards, max_entries=max_entries, on_evict=self._evicted
        )

    @staticmethod
    def _evicted(session_id: str) -> None:
        _full.warning("evicted", "memory store full: least recently used sessions are being evicted")

    @property
    def evicted(self) -> int:
        """How many sessions were evicted because the store was full."""
        return self._data.evicted_for_size

    def load(self, session_id: str) -> SessionRecord | None:
        return self._data.get(session_id)

    def version(self, session_id: str) -> int | None:
        record = self._data.peek(session_id)
        return None if record is None else record.version

    def apply(self, diffs: t.Sequence[SessionDiff]) -> list[SessionRecord | None]:
        update = self._data.update
        if len(diffs) == 1:  # a request's one write: no comprehension frame
            diff = diffs[0]
            return [update(diff.id, apply_diff, diff)]
        return [update(diff.id, apply_diff, diff) for diff in diffs]

    def delete(self, session_ids: t.Iterable[str]) -> None:
        for session_id in session_ids:
            self._data.pop(session_id)

    def count(self) -> int:
        return len(self._data)

    def iter_ids(self, batch_size: int = 1000) -> t.Iterator[str]:
        return iter(self._data.keys())

    def purge_expired(self, now: float, limit: int = 1000) -> list[str]:
        return self._data.remove_where(lambda record: record.is_expired(now), limit)

    def clear(self) -> None:
        self._data.clear()
