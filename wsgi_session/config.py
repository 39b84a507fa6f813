"""Configuration: one frozen, validated object with documented defaults.

:class:`SessionConfig` is built once at start-up and shared read-only by every
thread. Every bad value raises :class:`ValueError` with a message that names
the field, at construction time, so a misconfiguration fails the deploy rather
than the first request.
"""

from __future__ import annotations

import dataclasses
import re
import typing as t
from datetime import timedelta

if t.TYPE_CHECKING:
    from .serialization import Serializer

Mode = t.Literal["persistent", "opt_in", "manual"]
Transport = t.Literal["cookie", "header"]
SameSite = t.Literal["Lax", "Strict", "None"]
OutagePolicy = t.Literal["fail_closed", "fail_open"]
WriteMode = t.Literal["strict", "background"]
Coherence = t.Literal["validate", "notify"]

MODES: tuple[str, ...] = ("persistent", "opt_in", "manual")
TRANSPORTS: tuple[str, ...] = ("cookie", "header")
SAME_SITE_VALUES: tuple[str, ...] = ("Lax", "Strict", "None")
IP_SOURCES: tuple[str, ...] = ("REMOTE_ADDR", "X-Forwarded-For", "Forwarded", "X-Real-IP")
OUTAGE_POLICIES: tuple[str, ...] = ("fail_closed", "fail_open")
WRITE_MODES: tuple[str, ...] = ("strict", "background")
COHERENCE_MODES: tuple[str, ...] = ("validate", "notify")

#: The shortest secret accepted for signing or encryption, in bytes.
MIN_SECRET_BYTES = 32
#: Tokens longer than this are rejected before any parsing.
MAX_TOKEN_BYTES = 4096

_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


def _as_bytes(name: str, index: int, secret: object) -> bytes:
    if isinstance(secret, str):
        return secret.encode()
    if isinstance(secret, (bytes, bytearray)):
        return bytes(secret)
    raise ValueError(f"{name}[{index}] must be str or bytes, not {type(secret).__name__}")


@dataclasses.dataclass(frozen=True, eq=False)
class SessionConfig:
    """How sessions are identified, carried, kept and expired.

    Only ``secret_keys`` is required::

        config = SessionConfig(secret_keys=[os.environ["SESSION_SECRET"]])

    Durations are :class:`~datetime.timedelta` values. The fields, grouped:

    **Keys**

    :param secret_keys: HMAC keys for signing session tokens, newest first.
        Tokens are signed with the first; every key verifies, so a rotated-out
        key keeps its sessions alive until you drop it. At least 32 bytes each.
    :param encryption_keys: keys for AES-256-GCM encryption of data at rest in
        a persistent store, newest first. Empty (the default) stores plain
        tagged JSON.

    **The cookie** (``transport="cookie"``)

    :param cookie_name: the cookie's name. Default ``"session"``.
    :param cookie_path: default ``"/"``.
    :param cookie_domain: default ``None`` (host-only cookie).
    :param cookie_secure: send the cookie over HTTPS only. Default ``False``;
        turn it on in production.
    :param cookie_http_only: hide the cookie from JavaScript. Default ``True``.
    :param cookie_same_site: ``"Lax"`` (default), ``"Strict"``, ``"None"``
        (requires ``cookie_secure``) or ``None`` to omit the attribute.
    :param cookie_partitioned: add ``Partitioned`` (CHIPS); requires
        ``cookie_secure``.
    :param cookie_host_prefix: prefix the name with ``__Host-``; requires
        ``cookie_secure``, ``cookie_path="/"`` and no ``cookie_domain``.
    :param cookie_persistent: give ordinary (not long-term) sessions a cookie
        with ``Max-Age`` equal to ``lifetime``. Default ``False``: the cookie
        lasts until the browser closes and the server enforces ``lifetime``.
        Long-term sessions always get a persistent cookie.

    **The header** (``transport="header"``)

    :param transport: ``"cookie"`` (default) or ``"header"``: the token travels
        in a request header and comes back in the same response header.
    :param header_name: default ``"X-Session-Token"``.

    **Expiry**

    :param lifetime: idle timeout of an ordinary session. Default 6 hours.
    :param longterm_lifetime: idle timeout of a long-term ("remember me")
        session. Default 60 days.
    :param absolute_lifetime: a hard limit from creation, whatever the
        activity. Default ``None`` (no limit).
    :param memory_lifetime: how long an idle session stays in the per-process
        cache in front of a persistent store. Default 60 minutes.
    :param touch_interval: sliding expiry is written back at most this often
        per session; a read-only request inside it writes nothing. Default
        10 seconds.
    :param purge_interval: how often expired sessions are purged from the
        store. Default 5 minutes.
    :param memory_purge_interval: how often idle entries leave the cache.
        Default 1 minute.
    :param renew_grace: how long writes of requests still in flight with an
        id that :meth:`~wsgi_session.session.Session.renew` replaced are
        forwarded to the new id. Default 60 seconds.

    **Behaviour**

    :param mode: ``"persistent"`` (default) saves every session that holds
        data; ``"opt_in"`` keeps a session in process memory only until the
        view calls ``set_store(True)`` (the consent is carried, signed, in the
        token); ``"manual"`` creates no session until ``create_data()``.
    :param always_save: write the session back on every request that loaded
        it, changed or not. Default ``False``.
    :param bind_ip: bind tokens to the client's address, read from
        ``bind_ip_sources``. A token presented from another address is
        refused. Default ``False``.
    :param bind_ip_sources: where the address comes from, any of
        ``"REMOTE_ADDR"`` (default), ``"X-Forwarded-For"``, ``"Forwarded"``,
        ``"X-Real-IP"``. Use the headers only behind a proxy that sets them.
    :param bind_user_agent: bind tokens to the ``User-Agent``. Default ``False``.
    :param id_generator: a callable returning a new session id (16 to 128
        characters of ``A-Z a-z 0-9 - _``). Default: 192 random bits from
        :func:`secrets.token_urlsafe`.
    :param serializer: encodes each session value; default tagged JSON.
    :param environ_key: where the session is put in the WSGI environ.
        Default ``"session"``.

    **The memory layer and the bloom filter**

    :param cache_shards: number of independently locked shards (a power of
        two). Default 16.
    :param cache_max_entries: most sessions kept in process memory; the least
        recently used leave first. Default 100,000.
    :param bloom_filter: keep a bloom filter of known ids. ``None`` (default)
        turns it on with a persistent store.
    :param bloom_expected_elements: default 1,000,000.
    :param bloom_false_positive_rate: default 0.01.
    :param bloom_rebuild_interval: how often the filter is rebuilt from the
        store's ids (forgetting deleted ones). Default 1 hour.

    **Persistent stores** (see ``docs/``)

    :param write_mode: ``"strict"`` (default) commits a request's changes
        before the response is sent; ``"background"`` hands them to the flush
        thread and answers at once.
    :param coherence: how the per-process cache stays coherent with the
        store. ``"validate"`` (default) asks the store for the session's
        version on every request (one small round trip); ``"notify"`` trusts
        the cache and drops entries when another process announces a change
        (Redis pub/sub, PostgreSQL ``NOTIFY``): no round trip for a cached
        read, at the cost of a staleness window of one message's delivery.
        Stores that cannot announce changes fall back to ``"validate"``.
    :param outage_policy: ``"fail_closed"`` (default) answers 503 with
        ``Retry-After`` when the store cannot be reached; ``"fail_open"``
        serves the request with an empty session that is not saved.
    :param retry_after: the ``Retry-After`` value. Default 5 seconds.
    :param max_pending_writes: most diffs kept in memory while the store is
        down; past it, requests that write get the outage answer. Default
        10,000.
    """

    secret_keys: t.Sequence[str | bytes]
    encryption_keys: t.Sequence[str | bytes] = ()

    cookie_name: str = "session"
    cookie_path: str = "/"
    cookie_domain: str | None = None
    cookie_secure: bool = False
    cookie_http_only: bool = True
    cookie_same_site: SameSite | None = "Lax"
    cookie_partitioned: bool = False
    cookie_host_prefix: bool = False
    cookie_persistent: bool = False

    transport: Transport = "cookie"
    header_name: str = "X-Session-Token"

    lifetime: timedelta = timedelta(hours=6)
    longterm_lifetime: timedelta = timedelta(days=60)
    absolute_lifetime: timedelta | None = None
    memory_lifetime: timedelta = timedelta(minutes=60)
    touch_interval: timedelta = timedelta(seconds=10)
    purge_interval: timedelta = timedelta(minutes=5)
    memory_purge_interval: timedelta = timedelta(minutes=1)
    renew_grace: timedelta = timedelta(seconds=60)

    mode: Mode = "persistent"
    always_save: bool = False
    bind_ip: bool = False
    bind_ip_sources: t.Sequence[str] = ("REMOTE_ADDR",)
    bind_user_agent: bool = False
    id_generator: t.Callable[[], str] | None = None
    serializer: Serializer | None = None
    environ_key: str = "session"

    cache_shards: int = 16
    cache_max_entries: int = 100_000
    bloom_filter: bool | None = None
    bloom_expected_elements: int = 1_000_000
    bloom_false_positive_rate: float = 0.01
    bloom_rebuild_interval: timedelta = timedelta(hours=1)

    write_mode: WriteMode = "strict"
    coherence: Coherence = "validate"
    outage_policy: OutagePolicy = "fail_closed"
    retry_after: timedelta = timedelta(seconds=5)
    max_pending_writes: int = 10_000

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "secret_keys", self._check_keys("secret_keys", self.secret_keys, True))
        set_(self, "encryption_keys", self._check_keys("encryption_keys", self.encryption_keys, False))
        set_(self, "bind_ip_sources", tuple(self.bind_ip_sources))
        self._check_choices()
        self._check_cookie()
        self._check_durations()
        self._check_sizes()
        if not isinstance(self.environ_key, str) or not self.environ_key:
            raise ValueError("environ_key must be a non-empty string")
        if self.id_generator is not None and not callable(self.id_generator):
            raise ValueError("id_generator must be callable")
        if self.serializer is not None and not (
            callable(getattr(self.serializer, "dumps", None))
            and callable(getattr(self.serializer, "loads", None))
        ):
            raise ValueError("serializer must have dumps() and loads()")

    @staticmethod
    def _check_keys(name: str, keys: t.Any, required: bool) -> tuple[bytes, ...]:
        if isinstance(keys, (str, bytes)):
            raise ValueError(f"{name} must be a list of keys, newest first, not a single string")
        checked = tuple(_as_bytes(name, index, key) for index, key in enumerate(keys))
        if required and not checked:
            raise ValueError(f"{name} needs at least one key")
        for index, key in enumerate(checked):
            if len(key) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"{name}[{index}] is {len(key)} bytes; at least {MIN_SECRET_BYTES} are required"
                )
        return checked

    def _check_choices(self) -> None:
        for name, allowed in (
            ("mode", MODES),
            ("transport", TRANSPORTS),
            ("outage_policy", OUTAGE_POLICIES),
            ("write_mode", WRITE_MODES),
            ("coherence", COHERENCE_MODES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")
        if self.cookie_same_site is not None and self.cookie_same_site not in SAME_SITE_VALUES:
            raise ValueError(
                f"cookie_same_site must be one of {SAME_SITE_VALUES} or None, not {self.cookie_same_site!r}"
            )
        for source in self.bind_ip_sources:
            if source not in IP_SOURCES:
                raise ValueError(f"bind_ip_sources: {source!r} is not one of {IP_SOURCES}")
        if self.bind_ip and not self.bind_ip_sources:
            raise ValueError("bind_ip needs at least one entry in bind_ip_sources")

    def _check_cookie(self) -> None:
        if not _COOKIE_NAME.fullmatch(self.cookie_name):
            raise ValueError(f"cookie_name {self.cookie_name!r} is not a valid cookie name")
        if not _HEADER_NAME.fullmatch(self.header_name):
            raise ValueError(f"header_name {self.header_name!r} is not a valid header name")
        if not self.cookie_path.startswith("/"):
            raise ValueError("cookie_path must start with '/'")
        if self.cookie_same_site == "None" and not self.cookie_secure:
            raise ValueError("cookie_same_site='None' requires cookie_secure=True")
        if self.cookie_partitioned and not self.cookie_secure:
            raise ValueError("cookie_partitioned requires cookie_secure=True")
        if self.cookie_host_prefix:
            if not self.cookie_secure:
                raise ValueError("cookie_host_prefix requires cookie_secure=True")
            if self.cookie_path != "/":
                raise ValueError("cookie_host_prefix requires cookie_path='/'")
            if self.cookie_domain is not None:
                raise ValueError("cookie_host_prefix forbids cookie_domain")

    def _check_durations(self) -> None:
        for field in (
            "lifetime",
            "longterm_lifetime",
            "memory_lifetime",
            "touch_interval",
            "purge_interval",
            "memory_purge_interval",
            "renew_grace",
            "retry_after",
            "bloom_rebuild_interval",
        ):
            value = getattr(self, field)
            if not isinstance(value, timedelta):
                raise ValueError(f"{field} must be a timedelta, not {type(value).__name__}")
            if value <= timedelta(0) and field not in ("touch_interval", "renew_grace"):
                raise ValueError(f"{field} must be positive, got {value}")
            if value < timedelta(0):
                raise ValueError(f"{field} must not be negative, got {value}")
        if self.absolute_lifetime is not None:
            if not isinstance(self.absolute_lifetime, timedelta):
                raise ValueError("absolute_lifetime must be a timedelta or None")
            if self.absolute_lifetime <= timedelta(0):
                raise ValueError(f"absolute_lifetime must be positive, got {self.absolute_lifetime}")

    def _check_sizes(self) -> None:
        shards = self.cache_shards
        if not isinstance(shards, int) or shards < 1 or shards & (shards - 1):
            raise ValueError(f"cache_shards must be a power of two, got {shards!r}")
        if not isinstance(self.cache_max_entries, int) or self.cache_max_entries < shards:
            raise ValueError("cache_max_entries must be an int of at least cache_shards")
        if self.bloom_expected_elements < 1:
            raise ValueError("bloom_expected_elements must be at least 1")
        if not 0.0 < self.bloom_false_positive_rate < 1.0:
            raise ValueError("bloom_false_positive_rate must be between 0 and 1")
        if self.max_pending_writes < 1:
            raise ValueError("max_pending_writes must be at least 1")

    @property
    def signing_keys(self) -> tuple[bytes, ...]:
        """``secret_keys`` as bytes, newest first."""
        return t.cast("tuple[bytes, ...]", self.secret_keys)

    @property
    def sealing_keys(self) -> tuple[bytes, ...]:
        """``encryption_keys`` as bytes, newest first."""
        return t.cast("tuple[bytes, ...]", self.encryption_keys)

    @property
    def effective_cookie_name(self) -> str:
        """The cookie name as sent, with the ``__Host-`` prefix if enabled."""
        return ("__Host-" + self.cookie_name) if self.cookie_host_prefix else self.cookie_name

    @property
    def vary_header(self) -> str:
        """The request header a cache must vary on: ``Cookie`` or the token header."""
        return "Cookie" if self.transport == "cookie" else self.header_name

    def replace(self, **changes: t.Any) -> SessionConfig:
        """A copy with ``changes`` applied (and validated again)."""
        return dataclasses.replace(self, **changes)
