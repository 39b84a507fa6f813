"""The data that flows between the session, the cache and the stores.

A :class:`SessionRecord` is one session as stored: immutable, so a request can
keep it as its snapshot while other threads replace it. A :class:`SessionDiff`
is what one request changed: the keys it set (already encoded), the keys it
deleted, and the new deadlines. :func:`apply_diff` is the one definition of how
a diff merges into a record, used by every store that merges in Python.

Times are seconds since the epoch (floats), as the configured clock gives them.

Both classes are *values*: nothing mutates one after it is built, which is
what lets a request keep a record as its snapshot while other threads replace
it. They are not declared ``frozen`` only because a frozen dataclass pays
``object.__setattr__`` per field on construction — four times the cost, on
every write of every request. Build a new one (``dataclasses.replace``)
instead of assigning to a field.

Each class writes its ``__init__`` itself (``init=False``) rather than let
:mod:`dataclasses` generate one: the compiled build compiles a written
``__init__``, but a generated one is Python code made at import time, which
ran interpreted on every construction (a profile of the compiled new visitor
put 5 % of its time there, two constructions per write). A compiled class
with its own ``__init__`` cannot be made bare (``cls.__new__(cls)``), which
is how :mod:`copy` and :mod:`pickle` rebuild an object, so each class says
how to rebuild it (``__reduce__``).

The code that builds one on every request passes the fields by position:
calling a class with keywords makes CPython collect them into a dict first,
which made each construction about twice as slow (measured with ``timeit``
on CPython 3.11).

A record's ``memo`` holds decoded values of its own ``values``, and
:meth:`Session.get <wsgi_session.session.Session.get>` trusts it before it
looks at ``values``: a record built from another with different ``values``
(``dataclasses.replace(record, values=...)``) must get a memo of its own
(``memo={}``), or keys it no longer holds would still be read.
"""

from __future__ import annotations

import dataclasses
import typing as t

#: The reserved key that marks a record as the forwarding stub of a renewed
#: session (its value is the new id, encoded as UTF-8). User keys may not start
#: with NUL, so this cannot clash with session data.
MOVED_KEY = "\x00moved"


@dataclasses.dataclass(slots=True, init=False)
class SessionRecord:
    """One stored session.

    :param id: the session id.
    :param values: each key's encoded value (plaintext tagged JSON in memory).
    :param created: when the session was created.
    :param expires: the idle deadline: last activity plus the lifetime.
    :param absolute: the absolute deadline, or ``None``.
    :param longterm: whether the session uses ``longterm_lifetime``.
    :param version: increases with every write; used to validate caches.
    """

    id: str
    values: t.Mapping[str, bytes]
    created: float
    expires: float
    absolute: float | None = None
    longterm: bool = False
    version: int = 1
    #: Decoded immutable values, shared by the requests that read this exact
    #: record (safe: the record never changes and the values are immutable).
    #: Only user keys of ``values`` (never :data:`MOVED_KEY`), plus the
    #: manager's non-string "all decoded" marker.
    memo: dict[str, t.Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def __init__(
        self,
        id: str,
        values: t.Mapping[str, bytes],
        created: float,
        expires: float,
        absolute: float | None = None,
        longterm: bool = False,
        version: int = 1,
        memo: dict[str, t.Any] | None = None,
    ) -> None:
        self.id = id
        self.values = values
        self.created = created
        self.expires = expires
        self.absolute = absolute
        self.longterm = longterm
        self.version = version
        self.memo = {} if memo is None else memo

    def __reduce__(self) -> tuple[type[SessionRecord], tuple[t.Any, ...]]:
        # copy and pickle rebuild it through __init__: the compiled build's
        # instances cannot be made bare and filled in afterwards.
        return type(self), tuple(getattr(self, name) for name in _RECORD_FIELDS)

    @property
    def deadline(self) -> float:
        """The earlier of the idle and the absolute deadline."""
        absolute = self.absolute
        return self.expires if absolute is None or absolute > self.expires else absolute

    def is_expired(self, now: float) -> bool:
        """Whether the session is past either deadline at ``now``."""
        return now >= self.deadline

    @property
    def moved_to(self) -> str | None:
        """The new id, if this record is the forwarding stub of a renewal."""
        target = self.values.get(MOVED_KEY)
        return None if target is None else target.decode()


@dataclasses.dataclass(slots=True, init=False)
class SessionDiff:
    """What one request changed in one session.

    :param id: the session it applies to.
    :param set: keys to set, with their encoded values.
    :param delete: keys to remove.
    :param clear: remove every key not in ``set`` first (``session.clear()``).
    :param expires: the new idle deadline.
    :param absolute: the absolute deadline (carried, never moved later).
    :param longterm: the new long-term flag.
    :param created: creation time, used only when the diff creates the record.
    :param create: create the record if it does not exist. When ``False`` and
        the record is gone (destroyed, purged) the diff is dropped: a request
        never resurrects a session that was deleted under it.
    :param defaults: keys set only where the record has none (used by
        renewal to carry the old data underneath newer writes).
    :param local_only: keep the change in this process's memory and out of
        the persistent store (opt-in mode before consent).
    :param base: the record the writer believes is stored now (the request's
        validated snapshot), a hint that lets a SQL store write with one ``UPDATE
        ... WHERE version = base.version`` instead of reading the row first;
        when the hint is stale the store merges the usual way.
    :param span: how many writes this diff stands for (:func:`coalesce`
        folds a session's queued diffs into one); the version moves on by as
        much, so a process's cached copy, which took each of them, and the
        stored record keep the same count.
    """

    id: str
    set: t.Mapping[str, bytes]
    delete: frozenset[str]
    clear: bool
    expires: float
    absolute: float | None
    longterm: bool
    created: float
    create: bool = False
    defaults: t.Mapping[str, bytes] | None = None
    local_only: bool = False
    base: SessionRecord | None = dataclasses.field(default=None, compare=False, repr=False)
    span: int = 1

    def __init__(
        self,
        id: str,
        set: t.Mapping[str, bytes],
        delete: frozenset[str],
        clear: bool,
        expires: float,
        absolute: float | None,
        longterm: bool,
        created: float,
        create: bool = False,
        defaults: t.Mapping[str, bytes] | None = None,
        local_only: bool = False,
        base: SessionRecord | None = None,
        span: int = 1,
    ) -> None:
        self.id = id
        self.set = set
        self.delete = delete
        self.clear = clear
        self.expires = expires
        self.absolute = absolute
        self.longterm = longterm
        self.created = created
        self.create = create
        self.defaults = defaults
        self.local_only = local_only
        self.base = base
        self.span = span

    def __reduce__(self) -> tuple[type[SessionDiff], tuple[t.Any, ...]]:
        # As SessionRecord's.
        return type(self), tuple(getattr(self, name) for name in _DIFF_FIELDS)

    @property
    def is_touch(self) -> bool:
        """Whether only the deadlines of an existing record change."""
        return not (self.create or self.set or self.delete or self.clear or self.defaults)


#: Each class's fields, in the order its ``__init__`` takes them: what a copy
#: or a pickle is rebuilt from. (A record's memo is left out: a cache of decoded
#: values, which may hold the manager's marker object, it starts empty again.)
_RECORD_FIELDS = tuple(field.name for field in dataclasses.fields(SessionRecord) if field.name != "memo")
_DIFF_FIELDS = tuple(field.name for field in dataclasses.fields(SessionDiff))


def apply_diff(record: SessionRecord | None, diff: SessionDiff) -> SessionRecord | None:
    """Merge ``diff`` into ``record`` key by key and return the new record.

    Keys the diff did not touch keep the record's (newer) values, so two
    requests that changed different keys both survive. Returns ``None`` when
    the record is missing and the diff may not create it, and ``record``
    itself when it is a forwarding stub: the caller re-targets the diff.
    """
    if record is None:
        if not diff.create:
            return None
        values = dict(diff.defaults) if diff.defaults else {}
        for key in diff.delete:
            values.pop(key, None)
        values.update(diff.set)
        return SessionRecord(
            diff.id, values, diff.created, diff.expires, diff.absolute, diff.longterm, diff.span
        )
    if MOVED_KEY in record.values:
        return record
    memo: dict[str, t.Any] = {}
    if diff.clear:
        values = dict(diff.set)
    else:
        values = dict(record.values)
        if diff.defaults:
            for key, value in diff.defaults.items():
                values.setdefault(key, value)
        for key in diff.delete:
            values.pop(key, None)
        values.update(diff.set)
        if record.memo and not diff.defaults:
            # What was decoded from values that did not change stays decoded.
            # (Copied first, in one step: requests reading the record add to
            # its memo from other threads.)
            memo = record.memo.copy()
            for key in diff.set:
                memo.pop(key, None)
            for key in diff.delete:
                memo.pop(key, None)
    return SessionRecord(
        record.id,
        values,
        record.created,
        diff.expires,
        record.absolute if record.absolute is not None else diff.absolute,
        diff.longterm,
        record.version + diff.span,
        memo,
    )


def coalesce(diffs: t.Sequence[SessionDiff]) -> list[SessionDiff]:
    """One session's diffs, in the order they were made, folded into as few
    as give the same record: applying the result with :func:`apply_diff`
    gives what applying each of ``diffs`` in turn gives (values, deadlines,
    flags and version). A busy session's queued writes then cost the store
    one merge, not one per request.

    A run of diffs folds into its first unless a diff carries ``defaults``
    (a renewal's or a consent's copy of older data), may create the record
    when the first may not (the run would have been dropped), or is, or
    follows, a forwarding stub's."""
    return [fold(run) for run in foldable_runs(diffs)]


def foldable_runs(diffs: t.Sequence[SessionDiff]) -> list[list[SessionDiff]]:
    """``diffs`` cut into the runs that :func:`coalesce` folds into one
    diff each (a writer that must know which diffs a folded one stands for
    folds these itself, with :func:`fold`)."""
    runs: list[list[SessionDiff]] = []
    for diff in diffs:
        if runs and _joins(runs[-1][0], diff):
            runs[-1].append(diff)
        else:
            runs.append([diff])
    return runs


def _joins(first: SessionDiff, later: SessionDiff) -> bool:
    """Whether ``later`` can be folded into the run that ``first`` starts."""
    return (
        later.id == first.id
        and not later.defaults
        and (first.create or not later.create)
        and later.local_only == first.local_only
        and MOVED_KEY not in first.set
        and MOVED_KEY not in later.set
    )


def fold(run: list[SessionDiff]) -> SessionDiff:
    """A run of :func:`foldable_runs` as one diff, in one pass over its keys."""
    first = run[0]
    if len(run) == 1:
        return first
    values, deleted = dict(first.set), set(first.delete)
    clear, defaults, absolute = first.clear, first.defaults, first.absolute
    for later in run[1:]:
        if later.clear:  # what came before is gone anyway
            values, deleted, clear, defaults = dict(later.set), set(later.delete), True, None
        else:
            for key in later.delete:
                values.pop(key, None)
            values.update(later.set)
            deleted.difference_update(later.set)
            deleted.update(later.delete)
        if absolute is None:  # a record keeps the first absolute deadline it was given
            absolute = later.absolute
    return dataclasses.replace(
        run[-1],
        set=values,
        delete=frozenset(deleted),
        clear=clear,
        defaults=defaults,
        absolute=absolute,
        created=first.created,
        create=first.create,
        base=first.base,
        span=sum(diff.span for diff in run),
    )


def forwarding_stub(old_id: str, new_id: str, now: float, grace: float) -> SessionDiff:
    """A diff that turns ``old_id`` into a short-lived pointer to ``new_id``.

    A *new* request presenting the old token sees no session (a stub is not a
    live session), while requests already in flight with the old id have their
    writes forwarded to ``new_id`` until ``now + grace``. The old data stays
    in the stub so the renewal can read it after every later write has been
    redirected; it goes when the stub expires.
    """
    return SessionDiff(
        id=old_id,
        set={MOVED_KEY: new_id.encode()},
        delete=frozenset(),
        clear=False,
        expires=now + grace,
        absolute=None,
        longterm=False,
        created=now,
    )
