"""Encryption of session values at rest: AES-256-GCM with key rotation.

Turned on by ``SessionConfig(encryption_keys=[...])``. Each session value is
sealed on its own before it reaches a persistent store, so Redis dumps,
database backups and replicas hold no readable session data, and the
key-level merge of concurrent writes keeps working (the store still sees one
opaque value per key).

A sealed value is ``version (1 byte) | key id (4 bytes) | nonce (12 bytes) |
ciphertext and tag``. The AES key is derived from the configured secret with
HKDF-SHA256, so the secret is never used directly and may be any string of at
least 32 bytes. The session id and the key name are the *associated data*: a
value copied to another session or another key does not decrypt.

What is **not** hidden: the session ids, the key names, the sizes of the
values and the deadlines. Key rotation: put the new key first; values sealed
with an older key still open and are sealed with the newest key the next time
they are written. Drop an old key once :meth:`SealedStore.needs_rewrap` is
false for the sessions you care about, or once they have expired.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import typing as t

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .config import MIN_SECRET_BYTES
from .exceptions import BadStoredData, PartlyApplied
from .record import MOVED_KEY, SessionRecord
from .stores._codec import each_or_partly
from .stores.base import UNCHANGED, Store, Unchanged

if t.TYPE_CHECKING:
    import threading

    from .record import SessionDiff

log = logging.getLogger(__name__)

#: The first byte of every sealed value; a new layout gets a new number.
FORMAT_VERSION = 1
_INFO = b"wsgi_session at-rest v1"
_KEY_ID_SIZE = 4
_NONCE_SIZE = 12
_TAG_SIZE = 16
_HEADER_SIZE = 1 + _KEY_ID_SIZE + _NONCE_SIZE
_KEY_ID = slice(1, 1 + _KEY_ID_SIZE)
_NONCE = slice(1 + _KEY_ID_SIZE, _HEADER_SIZE)


class Sealer:
    """Seals and opens session values with AES-256-GCM.

    :param keys: secrets of at least 32 bytes, newest first. Values are sealed
        with the first; every key opens what it sealed.

    ::

        sealer = Sealer([new_secret, old_secret])
        sealed = sealer.seal(session_id, "cart", b'["apple"]')
        assert sealer.unseal(session_id, "cart", sealed) == b'["apple"]'
    """

    def __init__(self, keys: t.Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("Sealer needs a list of keys, newest first")
        #: Ciphers by key id (a list: two secrets may share an id by chance).
        self._ciphers: dict[bytes, list[AESGCM]] = {}
        for index, secret in enumerate(keys):
            if len(secret) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"encryption key {index} is {len(secret)} bytes; at least {MIN_SECRET_BYTES} are required"
                )
            derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)
            key_id = hashlib.sha256(derived).digest()[:_KEY_ID_SIZE]
            self._ciphers.setdefault(key_id, []).append(AESGCM(derived))
            if index == 0:
                self._current, self._current_id = self._ciphers[key_id][-1], key_id
        self._header = bytes((FORMAT_VERSION,)) + self._current_id

    def seal(self, session_id: str, field: str, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext``, the value of key ``field`` of session
        ``session_id``, with the newest key and a fresh random nonce."""
        nonce = os.urandom(_NONCE_SIZE)
        return self._header + nonce + self._current.encrypt(nonce, plaintext, _aad(session_id, field))

    def unseal(self, session_id: str, field: str, sealed: bytes) -> bytes:
        """Decrypt what :meth:`seal` returned for the same session and key.

        :raises BadStoredData: the value is not sealed, was sealed with a key
            not configured, was changed, or belongs to another session or key.
        """
        if len(sealed) < _HEADER_SIZE + _TAG_SIZE or sealed[0] != FORMAT_VERSION:
            raise BadStoredData(f"session value {field!r} is not a sealed value")
        nonce, aad = sealed[_NONCE], _aad(session_id, field)
        for cipher in self._ciphers.get(sealed[_KEY_ID], ()):
            try:
                return cipher.decrypt(nonce, sealed[_HEADER_SIZE:], aad)
            except InvalidTag:
                continue
        raise BadStoredData(f"session value {field!r} does not decrypt: unknown key, tampered with, or moved")

    def needs_rewrap(self, sealed: bytes) -> bool:
        """Whether ``sealed`` was sealed with another key than the newest."""
        return sealed[_KEY_ID] != self._current_id


def _aad(session_id: str, field: str) -> bytes:
    return session_id.encode() + b"\0" + field.encode()


class SealedStore(Store):
    """A store wrapper that keeps every session value sealed in ``inner``.

    Values are sealed on the way in (each diff's ``set`` and ``defaults``)
    and opened on the way out (every record :meth:`load` and :meth:`apply`
    return). The forwarding pointer of a renewed session
    (:data:`~wsgi_session.record.MOVED_KEY`) is stored as is. Everything
    else is passed through, so ``inner`` merges, expires and purges exactly
    as without encryption. The middleware builds it when
    ``encryption_keys`` is set::

        store = SealedStore(RedisStore(client), Sealer([key]))

    :param inner: the store that keeps the sealed values.
    :param sealer: the keys.
    """

    def __init__(self, inner: Store, sealer: Sealer) -> None:
        self.inner = inner
        self.sealer = sealer
        self.is_local = inner.is_local
        self.expires_by_itself = inner.expires_by_itself
        self.supports_notifications = inner.supports_notifications

    def setup(self) -> None:
        self.inner.setup()

    def load(self, session_id: str) -> SessionRecord | None:
        return self._open(self.inner.load(session_id))

    def version(self, session_id: str) -> int | None:
        return self.inner.version(session_id)

    def load_if_changed(self, session_id: str, version: int) -> SessionRecord | Unchanged | None:
        found = self.inner.load_if_changed(session_id, version)
        return found if found is UNCHANGED else self._open(found)

    def apply(self, diffs: t.Sequence[SessionDiff]) -> list[SessionRecord | None]:
        refused: frozenset[int] = frozenset()
        unavailable: frozenset[int] = frozenset()
        try:
            results = self.inner.apply([self._seal(diff) for diff in diffs])
        except PartlyApplied as partly:
            results, refused, unavailable = partly.results, partly.refused, partly.unavailable
        # Applied already: a record that cannot be opened must not fail the others.
        return each_or_partly(results, self._open, refused, unavailable)

    def needs_rewrap(self, session_id: str) -> bool:
        """Whether the stored session has a value sealed with an older key
        (it will be sealed with the newest key when that key is next written)."""
        record = self.inner.load(session_id)
        if record is None:
            return False
        return any(self.sealer.needs_rewrap(v) for k, v in record.values.items() if k != MOVED_KEY)

    def _seal(self, diff: SessionDiff) -> SessionDiff:
        defaults = diff.defaults and self._seal_values(diff.id, diff.defaults)
        # The writer's snapshot (``base``) holds opened values: merged in by the
        # inner store it would write them in plaintext. Without it the inner
        # store merges into the sealed row as stored (one read more).
        return dataclasses.replace(
            diff, set=self._seal_values(diff.id, diff.set), defaults=defaults, base=None
        )

    def _seal_values(self, session_id: str, values: t.Mapping[str, bytes]) -> dict[str, bytes]:
        seal = self.sealer.seal
        return {k: v if k == MOVED_KEY else seal(session_id, k, v) for k, v in values.items()}

    def _open(self, record: SessionRecord | None) -> SessionRecord | None:
        if record is None:
            return None
        unseal, session_id = self.sealer.unseal, record.id
        values = {k: v if k == MOVED_KEY else unseal(session_id, k, v) for k, v in record.values.items()}
        return dataclasses.replace(record, values=values, memo={})

    def delete(self, session_ids: t.Iterable[str]) -> None:
        self.inner.delete(session_ids)

    def exists(self, session_id: str) -> bool:
        return self.inner.exists(session_id)

    def count(self) -> int:
        return self.inner.count()

    def iter_ids(self, batch_size: int = 1000) -> t.Iterator[str]:
        return self.inner.iter_ids(batch_size)

    def purge_expired(self, now: float, limit: int = 1000) -> list[str]:
        return self.inner.purge_expired(now, limit)

    def clear(self) -> None:
        self.inner.clear()

    def enable_notifications(self, origin: str) -> None:
        self.inner.enable_notifications(origin)

    def listen(
        self,
        on_message: t.Callable[[str, str], None],
        on_reset: t.Callable[[], None],
        stop: threading.Event,
    ) -> None:
        self.inner.listen(on_message, on_reset, stop)

    def close(self) -> None:
        self.inner.close()
