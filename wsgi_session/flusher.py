"""Writing diffs to a persistent store: group commit, retry, shutdown.

Two ways in:

* :meth:`Flusher.commit` — *strict* writes. The calling request waits until
  its diffs are in the store. Requests that arrive while a write is under way
  queue up, and the next one to go takes the whole queue with it: every diff
  waiting is written in one :meth:`~wsgi_session.stores.base.Store.apply` call
  (one Redis pipeline, one SQL transaction). A lone request pays no thread
  hand-off; a busy process pays one round trip per *batch*, not per request.
* :meth:`Flusher.enqueue` — *background* writes and expiry touches. They join
  the pending queue, which the flush thread (asleep while it is empty) writes
  ``interval`` seconds later; a session's queued diffs are folded into one
  where they can be (:func:`~wsgi_session.record.coalesce`): a session that
  takes a hundred requests between two flushes costs the store one write.

When the store fails, nothing is dropped: the diffs stay pending (in order,
per session) and the flush thread retries with exponential backoff. A session
with pending diffs keeps them in order — a later strict write of that session
joins the queue behind them rather than overtaking. The queue is bounded by
``max_pending``; past it :meth:`commit` raises
:class:`~wsgi_session.exceptions.StoreUnavailable`, which the middleware turns
into its outage answer. :meth:`close` flushes what it can; whatever still
cannot be written is logged at ERROR, with the count, and counted as ``lost``.

The flush thread survives every exception. No lock is held during I/O.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import typing as t
from collections import OrderedDict

from .background import PeriodicTask
from .exceptions import BadStoredData, PartlyApplied, StoreError, StoreUnavailable
from .record import fold, foldable_runs

if t.TYPE_CHECKING:
    from .record import SessionDiff, SessionRecord
    from .stores.base import Store

log = logging.getLogger(__name__)

Results = list["SessionRecord | None"]


@dataclasses.dataclass
class FlushStats:
    """Counters of the flush machinery (read through ``middleware.stats``)."""

    flushes: int = 0
    flushed_diffs: int = 0
    retries: int = 0
    failures: int = 0
    pending: int = 0
    lost: int = 0
    #: Queued diffs folded into an earlier one of their session (:func:`~wsgi_session.record.coalesce`).
    coalesced: int = 0


class _Ticket:
    """A strict commit waiting for its batch."""

    __slots__ = ("diffs", "done", "error", "results")

    def __init__(self, diffs: t.Sequence[SessionDiff]) -> None:
        self.diffs = diffs
        self.results: Results = []
        self.error: BaseException | None = None
        self.done = False


class Flusher:
    """Group-committing writer in front of a :class:`Store`.

    :param store: the store to write to.
    :param max_pending: most diffs kept while the store is failing.
    :param interval: how often the flush thread writes pending diffs.
    :param on_written: called (outside any lock) with each batch's diffs and
        the records the store returned, so a cache can take them.
    """

    def __init__(
        self,
        store: Store,
        max_pending: int = 10_000,
        interval: float = 0.05,
        on_written: t.Callable[[t.Sequence[SessionDiff], Results], None] | None = None,
    ) -> None:
        self._store = store
        self._max_pending = max_pending
        self._on_written = on_written
        self._lock = threading.Lock()
        self._turn = threading.Condition(self._lock)
        self._queue: list[_Ticket] = []
        self._writing = False
        self._pending: OrderedDict[str, list[SessionDiff]] = OrderedDict()
        self._pending_count = 0
        #: Per session: data diffs (not mere expiry touches) accepted but not
        #: yet confirmed written: pending, or in flight to the store.
        self._unsaved: dict[str, int] = {}
        self._backoff = 0.0
        self._next_try = 0.0
        self.stats = FlushStats()
        self._task = PeriodicTask("wsgi-session-flush", interval, self.flush_pending, idle_until_woken=True)

    # -- strict writes ---------------------------------------------------------

    def commit(self, diffs: t.Sequence[SessionDiff]) -> Results:
        """Write ``diffs`` now (in a group with other waiting requests) and
        return the stored records. If the store fails, the diffs are kept
        pending and ``None`` results are returned.

        :raises StoreUnavailable: the store failed and the pending queue is full.
        """
        self._task.ensure_running()
        with self._lock:
            if any(diff.id in self._unsaved for diff in diffs):
                self._defer(diffs)  # keep order behind this session's unsaved writes
                return [None] * len(diffs)
            # Pending expiry touches of these sessions go first, in this batch.
            ahead = [touch for diff in diffs for touch in self._pending.pop(diff.id, ())]
            self._pending_count -= len(ahead)
            self.stats.pending = self._pending_count
            ticket = _Ticket([*ahead, *diffs])
            self._queue.append(ticket)
            while not ticket.done and self._writing:
                self._turn.wait()
            if ticket.done:
                return self._result(ticket)[len(ticket.diffs) - len(diffs) :]
            self._writing = True
            batch, self._queue = self._queue, []
        try:
            self._write_batch(batch)
        finally:
            with self._lock:
                self._writing = False
                self._turn.notify_all()
        return self._result(ticket)[len(ticket.diffs) - len(diffs) :]

    def _write_batch(self, batch: list[_Ticket]) -> None:
        """Write a group of tickets; every ticket ends ``done`` with results or
        an error, whatever the store raises."""
        diffs = [diff for ticket in batch for diff in ticket.diffs]
        try:
            results = self._store.apply(diffs)
        except StoreError as exc:
            for ticket in batch:
                ticket.results = [None] * len(ticket.diffs)
            self._keep_for_retry([(ticket, ticket.diffs) for ticket in batch], exc)
            for ticket in batch:
                ticket.done = True
            return
        except PartlyApplied as partly:  # applied but for some writes: nothing is sent again
            self._settle_partly(batch, partly)
            return
        except Exception as exc:
            if len(batch) > 1:  # nothing was applied; one bad session must not fail the others
                for ticket in batch:
                    self._write_batch([ticket])
                return
            batch[0].error = exc  # e.g. BadStoredData: the caller decides
            batch[0].done = True
            return
        self.stats.flushes += 1
        self.stats.flushed_diffs += len(diffs)
        if self._on_written is not None:
            self._on_written(diffs, results)
        position = 0
        for ticket in batch:
            ticket.results = results[position : position + len(ticket.diffs)]
            position += len(ticket.diffs)
            ticket.done = True

    def _settle_partly(self, batch: list[_Ticket], partly: PartlyApplied) -> None:
        """A group the store applied but for some writes: a ticket with a
        refused write fails, one with writes the store could not take now
        keeps those pending, the rest get their results."""
        applied: tuple[list[SessionDiff], Results] = ([], [])
        waiting: list[tuple[_Ticket, t.Sequence[SessionDiff]]] = []
        position = 0
        for ticket in batch:
            mine = range(position, position + len(ticket.diffs))
            position = mine.stop
            if not partly.refused.isdisjoint(mine):
                ticket.error = BadStoredData("a stored session of this write cannot be merged into")
                continue
            ticket.results = partly.results[mine.start : mine.stop]
            later: list[SessionDiff] = []
            for index, diff, result in zip(mine, ticket.diffs, ticket.results, strict=True):
                if index in partly.unavailable:
                    later.append(diff)
                else:
                    applied[0].append(diff)
                    applied[1].append(result)
            if later:
                waiting.append((ticket, later))
        if waiting:
            self._keep_for_retry(waiting, StoreUnavailable("the store could not take some of the writes"))
        self.stats.flushes += 1
        self.stats.flushed_diffs += len(applied[0])
        if self._on_written is not None:
            self._on_written(*applied)
        for ticket in batch:
            ticket.done = True

    def _keep_for_retry(
        self, writes: list[tuple[_Ticket, t.Sequence[SessionDiff]]], error: BaseException
    ) -> None:
        """Keep writes the store could not take now pending for the flush
        thread (their requests go on); a ticket whose writes do not fit in
        the queue fails with :class:`~wsgi_session.exceptions.StoreUnavailable`."""
        self.stats.failures += 1
        count = sum(len(diffs) for _, diffs in writes)
        log.warning("session store write failed (%s); %d diffs kept for retry", error, count)
        with self._lock:
            self._backoff = max(self._backoff, 0.1)
            self._next_try = time.monotonic() + self._backoff
            for ticket, diffs in writes:
                try:
                    self._defer(diffs)
                except StoreUnavailable as full:
                    ticket.error = full

    @staticmethod
    def _result(ticket: _Ticket) -> Results:
        if ticket.error is not None:
            raise ticket.error
        return ticket.results

    # -- background writes ---------------------------------------------------------

    def enqueue(self, diffs: t.Sequence[SessionDiff]) -> None:
        """Queue ``diffs`` for the flush thread.

        :raises StoreUnavailable: the pending queue is full.
        """
        self._task.ensure_running()
        with self._lock:
            self._defer(diffs)

    def _defer(self, diffs: t.Sequence[SessionDiff]) -> None:
        """Add to the pending queue (caller holds the lock)."""
        if self._pending_count + len(diffs) > self._max_pending:
            raise StoreUnavailable(f"{self._pending_count} session writes pending; queue full")
        for diff in diffs:
            self._pending.setdefault(diff.id, []).append(diff)
            if not diff.is_touch:
                self._unsaved[diff.id] = self._unsaved.get(diff.id, 0) + 1
        self._pending_count += len(diffs)
        self.stats.pending = self._pending_count
        self._task.wake()

    def _saved(self, diffs: t.Sequence[SessionDiff]) -> None:
        """``diffs`` are in the store now (caller holds the lock)."""
        unsaved = self._unsaved
        for diff in diffs:
            if not diff.is_touch and diff.id in unsaved:
                left = unsaved[diff.id] - 1
                if left > 0:
                    unsaved[diff.id] = left
                else:
                    del unsaved[diff.id]

    def has_pending(self, session_id: str) -> bool:
        """Whether any write of this session (an expiry touch included) is
        waiting for the flush thread."""
        return session_id in self._pending

    def holds_unsaved(self, session_id: str) -> bool:
        """Whether this process accepted changes to the session's data that
        are not confirmed in the store yet (pending, or being written). Its
        cached copy, which has them merged in, is then the one to serve."""
        return session_id in self._unsaved

    def discard(self, session_ids: t.Iterable[str]) -> None:
        """Forget pending writes of deleted sessions."""
        with self._lock:
            for session_id in session_ids:
                self._pending_count -= len(self._pending.pop(session_id, ()))
                self._unsaved.pop(session_id, None)
            self.stats.pending = self._pending_count

    def flush_pending(self, force: bool = False) -> bool:
        """Write every pending diff in one batch (the flush thread calls this,
        and :meth:`close` once the thread has stopped: never two at once, or
        two batches of one session could land out of order). Respects the
        retry backoff unless ``force``. Returns whether the queue is empty."""
        with self._lock:
            if not self._pending:
                return True
            if not force and time.monotonic() < self._next_try:
                return False
            taken, self._pending = self._pending, OrderedDict()
            self._pending_count = 0
        chains = list(taken.items())
        if self._backoff:
            self.stats.retries += 1
        failed, error = self._write_chains(chains)
        if failed:
            self.stats.failures += 1
            self._backoff = min(5.0, max(0.1, self._backoff * 2))
            self._next_try = time.monotonic() + self._backoff
            log.warning("session store flush failed (%s); retrying %d diffs in %.1fs",
                        error, sum(len(chain) for _, chain in failed), self._backoff)  # fmt: skip
            with self._lock:
                for session_id, chain in reversed(failed):
                    newer = self._pending.pop(session_id, [])
                    self._pending[session_id] = chain + newer
                    self._pending.move_to_end(session_id, last=False)
                    self._pending_count += len(chain)
                self.stats.pending = self._pending_count
        else:
            self._backoff = 0.0
        return not self._pending and not failed

    def _write_chains(
        self, chains: list[tuple[str, list[SessionDiff]]]
    ) -> tuple[list[tuple[str, list[SessionDiff]]], BaseException | None]:
        """Write pending chains (one per session) in one batch; return the
        chains to retry (the store could not take them) and the error. One
        bad stored row neither holds back nor replays the others: a batch
        applied but for some writes (:class:`~wsgi_session.exceptions.PartlyApplied`)
        settles write by write; one refused whole, session by session."""
        # A busy session's queued writes go as one; the runs behind each
        # written diff are kept for the bookkeeping and for a retry.
        runs = [(session_id, run) for session_id, chain in chains for run in foldable_runs(chain)]
        written = [fold(run) for _, run in runs]
        refused: frozenset[int] = frozenset()
        unavailable: frozenset[int] = frozenset()
        try:
            results = self._store.apply(written)
        except StoreError as exc:
            return chains, exc
        except PartlyApplied as partly:  # applied but for some writes: nothing is sent again
            results, refused, unavailable = partly.results, partly.refused, partly.unavailable
        except Exception as exc:
            if len(chains) == 1:
                self._lose(*chains[0], exc)
                return [], None
            failed: list[tuple[str, list[SessionDiff]]] = []
            error: BaseException | None = None
            for one in chains:  # nothing was applied: session by session
                retry, problem = self._write_chains([one])
                failed += retry
                error = error or problem
            return failed, error
        for index in sorted(refused):
            self._lose(*runs[index], BadStoredData("its stored session cannot be merged into"))
        applied = [index for index in range(len(runs)) if index not in refused and index not in unavailable]
        diffs = [diff for index in applied for diff in runs[index][1]]
        self.stats.flushes += 1
        self.stats.flushed_diffs += len(diffs)
        self.stats.coalesced += len(diffs) - len(applied)
        with self._lock:
            self.stats.pending = self._pending_count
            # Saved before the cache takes the stored records: a load in
            # between validates against the store, which already has them.
            self._saved(diffs)
        if self._on_written is not None:
            self._on_written([written[index] for index in applied], [results[index] for index in applied])
        if not unavailable:
            return [], None
        later: dict[str, list[SessionDiff]] = {}  # the store could not take them now
        for index in sorted(unavailable):
            session_id, run = runs[index]
            later.setdefault(session_id, []).extend(run)
        return list(later.items()), StoreUnavailable("the store could not take some of the writes")

    def _lose(self, session_id: str, chain: list[SessionDiff], error: BaseException) -> None:
        """Give up on one session's writes that the store refused (not an
        outage: retrying would not help), loudly; the cache lets go of its
        copy, which has them, so the next request reads what is stored."""
        with self._lock:
            self.stats.lost += len(chain)
            self._saved(chain)
        log.error("session %s...: %d writes could NOT be saved: %s", session_id[:6], len(chain), error)
        if self._on_written is not None:
            self._on_written(chain, [None] * len(chain))

    def close(self, timeout: float = 10.0) -> None:
        """Flush everything pending, retrying until ``timeout`` seconds have
        passed, then stop the thread. What cannot be written is logged."""
        self._task.stop()
        deadline = time.monotonic() + timeout
        while not self.flush_pending(force=True) and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        with self._lock:
            left = self._pending_count
            self._pending.clear()
            self._unsaved.clear()
            self._pending_count = 0
            self.stats.pending = 0
        if left:
            self.stats.lost += left
            log.error("session store unreachable at shutdown: %d session writes were NOT saved", left)
