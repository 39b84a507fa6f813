"""The Session mapping API and its change tracking (without ``modified = True``)."""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

import pytest
from core_testkit import RecordingStore, id_of, set_cookies

from wsgi_session import Session, SessionStateError, UnserializableValue
from wsgi_session.record import MOVED_KEY
from wsgi_session.signing import is_valid_id


def write(**values):
    def fn(session):
        session.update(values)

    return fn


# -- the mapping API ------------------------------------------------------------------


def test_session_is_a_mutable_mapping(scripted):
    app = scripted()

    def fn(session):
        assert isinstance(session, Session)
        assert isinstance(session, MutableMapping)

    app.run(fn)


def test_mapping_api_within_one_request(scripted):
    app = scripted()

    def fn(session):
        assert len(session) == 0
        assert list(session) == []
        assert "a" not in session
        assert session.get("a") is None
        assert session.get("a", 5) == 5
        with pytest.raises(KeyError):
            session["a"]

        session["a"] = 1
        assert session["a"] == 1
        assert "a" in session
        assert len(session) == 1

        assert session.setdefault("b", [1]) == [1]
        assert session.setdefault("b", [2]) == [1]

        session.update({"c": "x"}, d=2.5)
        session.update([("e", None)])
        assert sorted(session) == ["a", "b", "c", "d", "e"]
        assert sorted(session.keys()) == ["a", "b", "c", "d", "e"]
        assert dict(session.items()) == {"a": 1, "b": [1], "c": "x", "d": 2.5, "e": None}

        assert session.pop("c") == "x"
        assert session.pop("c", "gone") == "gone"
        with pytest.raises(KeyError):
            session.pop("c")

        del session["d"]
        with pytest.raises(KeyError):
            del session["d"]
        with pytest.raises(KeyError):
            session["d"]
        assert "d" not in session

        assert session.get("e", "default") is None  # a stored None is a value
        session["a"] = 2  # overwrite
        return dict(session)

    assert app.run(fn).json == {"a": 2, "b": [1], "e": None}
    assert app.run().json == {"a": 2, "b": [1], "e": None}


def test_mapping_api_across_requests(scripted):
    app = scripted()
    app.run(write(a=1, b=[1, 2], c="three", d={"x": 1}))

    def fn(session):
        assert len(session) == 4
        assert sorted(session) == ["a", "b", "c", "d"]
        assert "b" in session
        assert "zz" not in session
        assert session.pop("a") == 1
        del session["c"]
        session["e"] = True
        assert sorted(session) == ["b", "d", "e"]

    app.run(fn)
    assert app.run().json == {"b": [1, 2], "d": {"x": 1}, "e": True}


def test_popitem(scripted):
    app = scripted()
    app.run(write(only="one"))

    def fn(session):
        assert session.popitem() == ("only", "one")
        with pytest.raises(KeyError):
            session.popitem()

    app.run(fn)
    assert app.run().json == {}


def test_delete_then_set_again_in_one_request(scripted):
    app = scripted()
    app.run(write(a=1))

    def fn(session):
        del session["a"]
        session["a"] = 2

    app.run(fn)
    assert app.run().json == {"a": 2}


def test_clear_keeps_the_session_and_its_id(scripted):
    app = scripted()
    app.run(write(a=1, b=2))
    session_id = app.session_id

    def fn(session):
        session.clear()
        assert len(session) == 0
        assert "a" not in session
        with pytest.raises(KeyError):
            session["a"]
        session["c"] = 3
        return session.id

    assert app.run(fn).text == session_id
    assert app.run().json == {"c": 3}
    assert app.session_id == session_id
    assert set(app.record().values) == {"c"}


def test_clear_alone_empties_the_stored_session(scripted):
    app = scripted()
    app.run(write(a=1, b=2))
    app.run(lambda session: session.clear())
    assert app.run().json == {}
    assert dict(app.record().values) == {}


def test_values_of_every_supported_type_survive_a_request(scripted):
    app = scripted()
    values = {
        "when": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        "tags": {"a", "b"},
        "pair": (1, "x"),
        "raw": b"\x00\xff",
        "price": Decimal("9.99"),
    }
    app.run(lambda session: session.update(values))

    def fn(session):
        assert dict(session) == values
        assert type(session["pair"]) is tuple
        assert type(session["tags"]) is set

    app.run(fn)


# -- id and is_new ----------------------------------------------------------------------


def test_new_session_id_and_is_new(scripted):
    app = scripted()
    seen = {}

    def first(session):
        assert session.is_new
        seen["id"] = session.id
        assert is_valid_id(seen["id"])
        assert session.id == seen["id"]  # stable within the request
        session["x"] = 1
        assert session.is_new  # not stored until the response

    response = app.run(first)
    assert app.session_id == seen["id"]
    assert id_of(set_cookies(response)[0][0]) == seen["id"]

    def second(session):
        assert not session.is_new
        assert session.id == seen["id"]

    app.run(second)


def test_id_read_without_writing_creates_nothing(scripted):
    app = scripted()
    response = app.run(lambda session: session.id)
    assert is_valid_id(response.text)
    assert set_cookies(response) == []
    assert app.store.count() == 0


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [object(), [1, object()], {"k": {1: "int key"}}, 1j, "\ud800"], ids=repr)
def test_unserializable_value_raises_type_error_naming_the_key(scripted, bad):
    app = scripted()
    app.run(write(basket=["kept"]))

    def fn(session):
        with pytest.raises(TypeError, match=r"session\['basket'\]") as info:
            session["basket"] = bad
        assert isinstance(info.value, UnserializableValue)
        assert info.value.key == "basket"
        assert session["basket"] == ["kept"]  # the failed assignment changed nothing

    app.run(fn)
    assert app.run().json == {"basket": ["kept"]}


def test_unserializable_value_in_update_or_setdefault(scripted):
    app = scripted()

    def fn(session):
        with pytest.raises(UnserializableValue, match="'u'"):
            session.update(u=object())
        with pytest.raises(UnserializableValue, match="'s'"):
            session.setdefault("s", object())
        assert "u" not in session
        assert "s" not in session

    app.run(fn)
    assert app.store.count() == 0


@pytest.mark.parametrize("key", ["\x00", "\x00moved", "\x00private"], ids=repr)
def test_keys_starting_with_nul_are_reserved(scripted, key):
    app = scripted()

    def fn(session):
        with pytest.raises(ValueError, match="reserved"):
            session[key] = 1
        assert key not in session

    app.run(fn)
    assert app.store.count() == 0


def test_reserved_moved_key_is_invisible(scripted):
    app = scripted()
    app.run(write(a=1))

    def fn(session):
        assert MOVED_KEY not in session
        with pytest.raises(KeyError):
            session[MOVED_KEY]
        assert list(session) == ["a"]

    app.run(fn)


@pytest.mark.parametrize("cached", [False, True], ids=["memory", "cached-sqlite"])
def test_reserved_keys_stay_invisible_after_every_value_was_decoded(scripted, tmp_path, cached):
    """Reads look in the record's memo of decoded values first: nothing the
    process notes there (such as the "all values decoded" marker of a cached
    store) can ever answer for a key."""
    store = None
    if cached:
        import sqlalchemy as sa  # the SQL extra, only for this case

        from wsgi_session.stores import SQLAlchemyStore

        store = SQLAlchemyStore(sa.create_engine(f"sqlite:///{tmp_path / 's.db'}"))
    app = scripted(store, **({"write_mode": "background"} if cached else {}))
    app.run(write(a=1, b="two"))

    def fn(session):
        assert (session["a"], session["b"]) == (1, "two")  # both memoised now
        for reserved in ("\x00decoded", MOVED_KEY, "\x00"):
            assert session.get(reserved) is None
            assert reserved not in session
        assert sorted(session) == ["a", "b"]

    app.run(fn)
    app.run(fn)  # the second request reads the memoised record


@pytest.mark.parametrize("key", [1, 1.5, None, b"bytes", ("t",), True], ids=repr)
def test_non_str_keys_raise_type_error(scripted, key):
    app = scripted()

    def fn(session):
        with pytest.raises(TypeError, match="session keys must be str"):
            session[key] = "value"
        assert key not in session
        with pytest.raises(KeyError):
            session[key]
        assert session.get(key, "default") == "default"
        with pytest.raises(KeyError):
            del session[key]

    app.run(fn)


class _Key(StrEnum):
    USER = "user"


def test_str_subclass_keys_read_what_their_str_wrote(scripted):
    """A StrEnum member finds the value its string wrote, as in a dict."""
    app = scripted()
    app.run(write(user="ada"))

    def fn(session):
        assert _Key.USER in session
        assert session[_Key.USER] == "ada"
        assert session.get(_Key.USER) == "ada"
        del session[_Key.USER]
        assert "user" not in session

    app.run(fn)


def test_every_accepted_value_can_be_read_back(scripted):
    # Regression: this dict was accepted on set but could not be decoded: a 500 on every later read.
    app = scripted()
    app.run(write(payload={"\x00from_user": "x"}))
    response = app.run(expect_errors=True)
    assert response.status_int == 200
    assert response.json == {"payload": {"\x00from_user": "x"}}


def test_manual_mode_write_before_create_data_raises(scripted):
    app = scripted(mode="manual")

    def fn(session):
        with pytest.raises(SessionStateError, match="create_data"):
            session["a"] = 1

    app.run(fn)


# -- change detection ---------------------------------------------------------------------


def test_nested_list_mutation_is_saved(scripted):
    app = scripted()
    app.run(write(cart=[]))
    app.run(lambda session: session["cart"].append("apple"))
    app.run(lambda session: session["cart"].append("pear"))
    assert app.run().json == {"cart": ["apple", "pear"]}


def test_nested_dict_and_set_mutation_is_saved(scripted):
    app = scripted()
    app.run(write(prefs={"theme": "light", "langs": ["en"]}, seen={1}))

    def fn(session):
        session["prefs"]["theme"] = "dark"
        session["prefs"]["langs"].append("fr")
        session["seen"].add(2)

    app.run(fn)

    def check(session):
        assert session["prefs"] == {"theme": "dark", "langs": ["en", "fr"]}
        assert session["seen"] == {1, 2}

    app.run(check)


def test_mutation_through_get_setdefault_and_values_is_saved(scripted):
    app = scripted()
    app.run(write(a=[], b=[], c=[]))

    def fn(session):
        session.get("a").append(1)
        session.setdefault("b", None).append(2)
        for value in session.values():
            value.append(0)

    app.run(fn)
    assert app.run().json == {"a": [1, 0], "b": [2, 0], "c": [0]}


def test_mutation_after_assignment_is_saved(scripted):
    app = scripted()

    def fn(session):
        cart = []
        session["cart"] = cart
        cart.append("late")

    app.run(fn)
    assert app.run().json == {"cart": ["late"]}


def test_mutation_into_something_unserializable_keeps_the_stored_value(scripted):
    app = scripted()
    app.run(write(cart=["ok"]))
    response = app.run(lambda session: session["cart"].append(object()))
    assert response.status_int == 200
    assert app.run().json == {"cart": ["ok"]}
    assert app.middleware.stats.encode_errors == 1


def test_only_changed_keys_are_written(scripted):
    store = RecordingStore()
    app = scripted(store=store)
    app.run(write(a=[1], b=[2], c="x", d={"n": 1}))
    version = app.record().version
    store.applied.clear()

    def fn(session):
        assert [session["a"], session["b"], session["c"], session["d"]] == [[1], [2], "x", {"n": 1}]
        session["a"].append(10)

    app.run(fn)
    assert len(store.applied) == 1
    diff = store.applied[0]
    assert dict(diff.set) == {"a": b"[1,10]"}
    assert diff.delete == frozenset()
    assert not diff.clear
    record = app.record()
    assert record.version == version + 1
    assert record.values["b"] == b"[2]"


def test_only_deleted_keys_are_sent_as_deletes(scripted):
    store = RecordingStore()
    app = scripted(store=store)
    app.run(write(a=1, b=2))
    store.applied.clear()

    def fn(session):
        del session["b"]
        session.pop("missing", None)

    app.run(fn)
    assert len(store.applied) == 1
    assert store.applied[0].set == {}
    assert store.applied[0].delete == frozenset({"b"})


def test_setting_the_same_value_writes_nothing(scripted):
    store = RecordingStore()
    app = scripted(store=store)
    app.run(write(a=[1, 2], b="x", c={"k": (1, 2)}, d=None))
    version = app.record().version
    store.applied.clear()

    def fn(session):
        session["a"] = [1, 2]
        session["b"] = "x"
        session["c"] = {"k": (1, 2)}
        session["d"] = None
        session.update(b="x")

    response = app.run(fn)
    assert store.applied == []
    assert app.record().version == version
    assert set_cookies(response) == []


def test_new_key_then_deleted_in_same_request_writes_nothing(scripted):
    store = RecordingStore()
    app = scripted(store=store)
    app.run(write(a=1))
    store.applied.clear()

    def fn(session):
        session["tmp"] = 1
        del session["tmp"]

    app.run(fn)
    assert store.applied == []


def test_read_only_request_writes_nothing_and_sends_no_cookie(scripted):
    store = RecordingStore()
    app = scripted(store=store)
    app.run(write(a=[1], b={"c": 2}, s="text"))
    version = app.record().version
    store.applied.clear()

    def fn(session):
        return {"all": dict(session), "len": len(session), "has": "a" in session}

    for _ in range(3):
        response = app.run(fn)
        assert response.json["all"] == {"a": [1], "b": {"c": 2}, "s": "text"}
        assert set_cookies(response) == []
        assert "Set-Cookie" not in response.headers
    assert store.applied == []
    assert app.record().version == version


def test_always_save_writes_on_every_request(scripted):
    store = RecordingStore()
    app = scripted(store=store, always_save=True)
    app.run(write(a=1))
    version = app.record().version
    app.run()
    app.run()
    assert app.record().version == version + 2


def test_update_now_forces_a_write(scripted):
    app = scripted()
    app.run(write(a=1))
    version = app.record().version
    app.run(lambda session: session.update_now())
    assert app.record().version == version + 1


def test_repr_does_not_raise(scripted):
    app = scripted()
    app.run(write(a=1))

    def fn(session):
        assert "a" in repr(session)

    app.run(fn)
