"""SessionConfig: validation at construction, documented defaults, immutability."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from core_testkit import OLD_SECRET, SECRET

from wsgi_session import SessionConfig, TaggedJSONSerializer


def config(**fields):
    fields.setdefault("secret_keys", [SECRET])
    return SessionConfig(**fields)


# -- keys ------------------------------------------------------------------------


def test_short_secret_rejected_with_its_index_and_length():
    with pytest.raises(ValueError, match=r"secret_keys\[1\] is 31 bytes; at least 32"):
        config(secret_keys=[SECRET, "x" * 31])


def test_secret_length_is_counted_in_bytes_not_characters():
    # 16 characters, 32 bytes in UTF-8: long enough.
    ok = config(secret_keys=["é" * 16])
    assert ok.secret_keys == (("é" * 16).encode(),)
    with pytest.raises(ValueError, match="15 bytes"):
        config(secret_keys=[b"\x00" * 15])


def test_secret_of_exactly_32_bytes_is_accepted():
    assert config(secret_keys=["k" * 32]).secret_keys == (b"k" * 32,)


def test_empty_secret_list_rejected():
    with pytest.raises(ValueError, match="secret_keys needs at least one key"):
        config(secret_keys=[])


@pytest.mark.parametrize("single", [SECRET, SECRET.encode()])
def test_single_string_instead_of_list_rejected(single):
    with pytest.raises(ValueError, match="must be a list of keys"):
        config(secret_keys=single)


def test_secret_keys_are_normalised_to_bytes_newest_first():
    cfg = config(secret_keys=[SECRET, OLD_SECRET.encode()])
    assert cfg.secret_keys == (SECRET.encode(), OLD_SECRET.encode())
    assert cfg.signing_keys == cfg.secret_keys


def test_short_encryption_key_rejected():
    with pytest.raises(ValueError, match=r"encryption_keys\[0\] is 5 bytes"):
        config(encryption_keys=["short"])


def test_encryption_key_single_string_rejected():
    with pytest.raises(ValueError, match="encryption_keys must be a list"):
        config(encryption_keys=SECRET)


# -- choices -----------------------------------------------------------------------


def test_unknown_mode_rejected():
    with pytest.raises(ValueError, match=r"mode must be one of .*'always'"):
        config(mode="always")


def test_unknown_transport_rejected():
    with pytest.raises(ValueError, match=r"transport must be one of .*'query'"):
        config(transport="query")


@pytest.mark.parametrize("value", ["lax", "strict", "none", "", "Relaxed"])
def test_bad_same_site_rejected(value):
    with pytest.raises(ValueError, match="cookie_same_site must be one of"):
        config(cookie_same_site=value)


@pytest.mark.parametrize("value", ["Lax", "Strict", None])
def test_good_same_site_accepted(value):
    assert config(cookie_same_site=value).cookie_same_site == value


def test_same_site_none_requires_secure():
    with pytest.raises(ValueError, match="cookie_same_site='None' requires cookie_secure=True"):
        config(cookie_same_site="None")
    assert config(cookie_same_site="None", cookie_secure=True).cookie_same_site == "None"


def test_partitioned_requires_secure():
    with pytest.raises(ValueError, match="cookie_partitioned requires cookie_secure=True"):
        config(cookie_partitioned=True)
    assert config(cookie_partitioned=True, cookie_secure=True).cookie_partitioned


def test_host_prefix_requires_secure():
    with pytest.raises(ValueError, match="cookie_host_prefix requires cookie_secure=True"):
        config(cookie_host_prefix=True)


def test_host_prefix_requires_root_path():
    with pytest.raises(ValueError, match="cookie_host_prefix requires cookie_path='/'"):
        config(cookie_host_prefix=True, cookie_secure=True, cookie_path="/app")


def test_host_prefix_forbids_domain():
    with pytest.raises(ValueError, match="cookie_host_prefix forbids cookie_domain"):
        config(cookie_host_prefix=True, cookie_secure=True, cookie_domain="example.com")


def test_host_prefix_valid_setup_prefixes_the_name():
    cfg = config(cookie_host_prefix=True, cookie_secure=True)
    assert cfg.effective_cookie_name == "__Host-session"
    assert config().effective_cookie_name == "session"


def test_cookie_path_must_be_absolute():
    with pytest.raises(ValueError, match="cookie_path must start with '/'"):
        config(cookie_path="app")


@pytest.mark.parametrize(
    "name", ["", "has space", "semi;colon", "equals=sign", "comma,", 'quote"', "tab\t", "ünïcode"]
)
def test_bad_cookie_name_rejected(name):
    with pytest.raises(ValueError, match=r"cookie_name .* is not a valid cookie name"):
        config(cookie_name=name)


@pytest.mark.parametrize("name", ["", "-leading-dash", "X Session", "X_Session:", "X.Session", "Ünï"])
def test_bad_header_name_rejected(name):
    with pytest.raises(ValueError, match=r"header_name .* is not a valid header name"):
        config(header_name=name)


def test_valid_names_accepted():
    cfg = config(cookie_name="my_app.sid-1", header_name="X-Auth-Token2")
    assert (cfg.cookie_name, cfg.header_name) == ("my_app.sid-1", "X-Auth-Token2")


@pytest.mark.parametrize(
    "sources", [["REMOTE_ADDR", "X-Client-IP"], ["remote_addr"], ["HTTP_X_FORWARDED_FOR"]]
)
def test_bad_bind_ip_sources_rejected(sources):
    with pytest.raises(ValueError, match=r"bind_ip_sources: .* is not one of"):
        config(bind_ip=True, bind_ip_sources=sources)


def test_bind_ip_needs_a_source():
    with pytest.raises(ValueError, match="bind_ip needs at least one entry in bind_ip_sources"):
        config(bind_ip=True, bind_ip_sources=[])


def test_bind_ip_sources_stored_as_tuple():
    cfg = config(bind_ip=True, bind_ip_sources=["X-Forwarded-For", "REMOTE_ADDR"])
    assert cfg.bind_ip_sources == ("X-Forwarded-For", "REMOTE_ADDR")


@pytest.mark.parametrize(("field", "value"), [("outage_policy", "retry"), ("write_mode", "lazy")])
def test_unknown_policy_choices_rejected(field, value):
    with pytest.raises(ValueError, match=f"{field} must be one of"):
        config(**{field: value})


# -- durations ------------------------------------------------------------------------

POSITIVE_DURATIONS = [
    "lifetime",
    "longterm_lifetime",
    "memory_lifetime",
    "purge_interval",
    "memory_purge_interval",
    "retry_after",
]


@pytest.mark.parametrize("field", POSITIVE_DURATIONS)
@pytest.mark.parametrize("value", [timedelta(0), timedelta(seconds=-1)])
def test_zero_or_negative_duration_rejected(field, value):
    with pytest.raises(ValueError, match=f"{field} must be positive"):
        config(**{field: value})


@pytest.mark.parametrize("field", ["touch_interval", "renew_grace"])
def test_touch_interval_and_renew_grace_may_be_zero_but_not_negative(field):
    assert getattr(config(**{field: timedelta(0)}), field) == timedelta(0)
    with pytest.raises(ValueError, match=f"{field} must not be negative"):
        config(**{field: timedelta(seconds=-1)})


@pytest.mark.parametrize("field", [*POSITIVE_DURATIONS, "touch_interval", "renew_grace"])
def test_duration_must_be_timedelta(field):
    with pytest.raises(ValueError, match=f"{field} must be a timedelta, not int"):
        config(**{field: 3600})


@pytest.mark.parametrize("value", [timedelta(0), timedelta(hours=-1)])
def test_absolute_lifetime_must_be_positive(value):
    with pytest.raises(ValueError, match="absolute_lifetime must be positive"):
        config(absolute_lifetime=value)


def test_absolute_lifetime_must_be_timedelta_or_none():
    with pytest.raises(ValueError, match="absolute_lifetime must be a timedelta or None"):
        config(absolute_lifetime=3600)
    assert config(absolute_lifetime=timedelta(days=1)).absolute_lifetime == timedelta(days=1)


# -- sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize("shards", [0, -2, 3, 12, 100, 1.0, "16"])
def test_cache_shards_must_be_power_of_two(shards):
    with pytest.raises(ValueError, match="cache_shards must be a power of two"):
        config(cache_shards=shards)


@pytest.mark.parametrize("shards", [1, 2, 64, 1024])
def test_power_of_two_shards_accepted(shards):
    assert config(cache_shards=shards).cache_shards == shards


def test_cache_max_entries_at_least_shards():
    with pytest.raises(ValueError, match="cache_max_entries must be an int of at least cache_shards"):
        config(cache_shards=16, cache_max_entries=8)


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, 1.5])
def test_bad_bloom_rate_rejected(rate):
    with pytest.raises(ValueError, match="bloom_false_positive_rate must be between 0 and 1"):
        config(bloom_false_positive_rate=rate)


def test_bloom_expected_elements_positive():
    with pytest.raises(ValueError, match="bloom_expected_elements must be at least 1"):
        config(bloom_expected_elements=0)


def test_max_pending_writes_positive():
    with pytest.raises(ValueError, match="max_pending_writes must be at least 1"):
        config(max_pending_writes=0)


# -- other callables ----------------------------------------------------------------------


@pytest.mark.parametrize("serializer", [object(), "json", 42])
def test_bad_serializer_rejected(serializer):
    with pytest.raises(ValueError, match=r"serializer must have dumps\(\) and loads\(\)"):
        config(serializer=serializer)


def test_serializer_with_only_dumps_rejected():
    class HalfSerializer:
        def dumps(self, value):
            return b""

    with pytest.raises(ValueError, match="serializer must have"):
        config(serializer=HalfSerializer())


def test_custom_serializer_accepted():
    serializer = TaggedJSONSerializer()
    assert config(serializer=serializer).serializer is serializer


def test_id_generator_must_be_callable():
    with pytest.raises(ValueError, match="id_generator must be callable"):
        config(id_generator="abc")


def test_environ_key_must_be_non_empty():
    with pytest.raises(ValueError, match="environ_key must be a non-empty string"):
        config(environ_key="")


# -- defaults and immutability ---------------------------------------------------------------


def test_defaults_match_the_docstring():
    cfg = config()
    assert cfg.lifetime == timedelta(hours=6)
    assert cfg.longterm_lifetime == timedelta(days=60)
    assert cfg.memory_lifetime == timedelta(minutes=60)
    assert cfg.touch_interval == timedelta(seconds=10)
    assert cfg.purge_interval == timedelta(minutes=5)
    assert cfg.memory_purge_interval == timedelta(minutes=1)
    assert cfg.renew_grace == timedelta(seconds=60)
    assert cfg.absolute_lifetime is None
    assert cfg.cookie_name == "session"
    assert cfg.cookie_path == "/"
    assert cfg.cookie_domain is None
    assert cfg.cookie_secure is False
    assert cfg.cookie_http_only is True
    assert cfg.cookie_same_site == "Lax"
    assert cfg.cookie_partitioned is False
    assert cfg.cookie_host_prefix is False
    assert cfg.cookie_persistent is False
    assert cfg.header_name == "X-Session-Token"
    assert cfg.transport == "cookie"
    assert cfg.mode == "persistent"
    assert cfg.environ_key == "session"
    assert cfg.bind_ip is False
    assert cfg.bind_ip_sources == ("REMOTE_ADDR",)
    assert cfg.bind_user_agent is False
    assert cfg.cache_shards == 16
    assert cfg.cache_max_entries == 100_000
    assert cfg.bloom_filter is None
    assert cfg.bloom_expected_elements == 1_000_000
    assert cfg.bloom_false_positive_rate == 0.01
    assert cfg.write_mode == "strict"
    assert cfg.outage_policy == "fail_closed"
    assert cfg.retry_after == timedelta(seconds=5)
    assert cfg.max_pending_writes == 10_000
    assert cfg.encryption_keys == ()
    assert cfg.vary_header == "Cookie"


def test_vary_header_follows_transport():
    assert config(transport="header").vary_header == "X-Session-Token"
    assert config(transport="header", header_name="X-Auth").vary_header == "X-Auth"


def test_secret_keys_are_required():
    with pytest.raises(TypeError):
        SessionConfig()


def test_config_is_frozen():
    cfg = config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lifetime = timedelta(seconds=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.secret_keys = ()


def test_replace_validates_again():
    cfg = config()
    changed = cfg.replace(cookie_name="sid")
    assert changed.cookie_name == "sid"
    assert cfg.cookie_name == "session"
    with pytest.raises(ValueError, match="mode must be one of"):
        cfg.replace(mode="nope")


# -- bugs found while writing these tests ---------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [("cookie_name", "session\n"), ("header_name", "X-Token\n")])
def test_name_with_trailing_newline_rejected(field, value):
    # Regression: the name patterns ended in "$", which matches before a final newline.
    with pytest.raises(ValueError, match="is not a valid"):
        config(**{field: value})


@pytest.mark.parametrize("key", [64, None, 3.5, ["nested"]], ids=repr)
def test_non_string_secret_rejected(key):
    # Regression: bytes(64) is 64 NUL bytes, which was accepted as a secret.
    with pytest.raises(ValueError):
        config(secret_keys=[key])


def test_non_string_key_error_names_the_field():
    with pytest.raises(ValueError, match="secret_keys"):
        config(secret_keys=[64])
    with pytest.raises(ValueError, match="encryption_keys"):
        config(encryption_keys=[64])
