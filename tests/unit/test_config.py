"""Configuration: TOML, environment overrides, secret references, validation, check-config."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_settings
from gateway.config.describe import describe
from gateway.config.loader import settings_from_dict
from gateway.config.presets import DATA_CENTERS
from gateway.config.settings import DEFAULT_PORT, DEFAULT_RATE_LIMIT_PER_MINUTE, Settings
from gateway.errors import ConfigError

KEY_1 = base64.b64encode(bytes(range(32))).decode()
KEY_2 = base64.b64encode(bytes(range(100, 132))).decode()

TOML = f"""
env = "prod"

[server]
host = "0.0.0.0"
port = 8081

[store]
url = "sqlite:///tmp/gw.db"

[[tenants]]
name = "acme"
data_center = "eu"
api_token = "wrk-api-token-123"
api_keys = ["acme-key-1", "acme-key-2"]
rate_limit_per_minute = 30

[[tenants]]
name = "legacy"
base_url = "https://workato.example.com/"
email = "ops@example.com"
token = "legacy-user-token-456"

[security]
token_keys = [{{ id = "k2", key = "{KEY_2}" }}, {{ id = "k1", key = "{KEY_1}" }}]
admin_tokens = ["admin-token-789"]
"""


def tenant(**fields: Any) -> dict[str, Any]:
    return {"name": "acme", "data_center": "us", "api_token": "wrk-token", **fields}


def config(**sections: Any) -> dict[str, Any]:
    return {"security": {"token_keys": [{"id": "k1", "key": KEY_1}]}, **sections}


def config_error(data: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        settings_from_dict(data, environ or {})
    return str(info.value)


@pytest.fixture
def toml_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(TOML)
    return path


# -- loading ---------------------------------------------------------------------------------


def test_toml_file_is_loaded(toml_file: Path) -> None:
    settings = load_settings(toml_file, {})
    assert settings.server.host == "0.0.0.0"
    assert settings.server.port == 8081
    assert settings.store.sqlite_path == "tmp/gw.db"
    acme, legacy = settings.tenants
    assert acme.resolved_base_url == "https://app.eu.workato.com"
    assert acme.rate_limit_per_minute == 30
    assert [k.get_secret_value() for k in acme.api_keys] == ["acme-key-1", "acme-key-2"]
    assert legacy.resolved_base_url == "https://workato.example.com"
    assert legacy.rate_limit_per_minute == DEFAULT_RATE_LIMIT_PER_MINUTE
    assert [k.id for k in settings.security.token_keys] == ["k2", "k1"]
    assert settings.security.token_keys[0].key_bytes == bytes(range(100, 132))


def test_no_file_and_no_environment_gives_defaults_in_dev() -> None:
    settings = load_settings(None, {"RESUME_GATEWAY_ENV": "dev"})
    assert settings.env == "dev"
    assert settings.server.port == DEFAULT_PORT
    assert settings.tenants == []


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", {})


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server\nport = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path, {})


def test_unknown_field_is_refused_with_its_path() -> None:
    message = config_error(config(server={"prot": 9000}))
    assert "server.prot" in message


# -- environment overrides -------------------------------------------------------------------


def test_env_overrides_a_scalar_in_the_file(toml_file: Path) -> None:
    settings = load_settings(toml_file, {"RESUME_GATEWAY_SERVER__PORT": "9000"})
    assert settings.server.port == 9000


def test_env_overrides_a_list_item_field(toml_file: Path) -> None:
    environ = {"RESUME_GATEWAY_TENANTS__0__API_TOKEN": "from-env-token"}
    settings = load_settings(toml_file, environ)
    token = settings.tenants[0].api_token
    assert token is not None
    assert token.get_secret_value() == "from-env-token"
    assert settings.tenants[0].name == "acme"  # the rest of the tenant is untouched


def test_env_can_build_a_whole_tenant_without_a_file() -> None:
    environ = {
        "RESUME_GATEWAY_SECURITY__TOKEN_KEYS": f'[{{"id": "k1", "key": "{KEY_1}"}}]',
        "RESUME_GATEWAY_TENANTS__0__NAME": "acme",
        "RESUME_GATEWAY_TENANTS__0__DATA_CENTER": "jp",
        "RESUME_GATEWAY_TENANTS__0__API_TOKEN": "t-1",
        "RESUME_GATEWAY_TENANTS__0__API_KEYS": '["k-a", "k-b"]',
        "RESUME_GATEWAY_TENANTS__0__RAW_MODE": "true",
    }
    settings = load_settings(None, environ)
    (acme,) = settings.tenants
    assert acme.resolved_base_url == "https://app.jp.workato.com"
    assert acme.raw_mode is True
    assert len(acme.api_keys) == 2


def test_env_can_build_more_than_ten_tenants() -> None:
    """Sorted as text, TENANTS__10 came before TENANTS__2: 'list index out of range'."""
    environ = {"RESUME_GATEWAY_SECURITY__TOKEN_KEYS": f'[{{"id": "k1", "key": "{KEY_1}"}}]'}
    for n in range(12):
        environ[f"RESUME_GATEWAY_TENANTS__{n}__NAME"] = f"t{n}"
        environ[f"RESUME_GATEWAY_TENANTS__{n}__API_TOKEN"] = f"token-{n}"
        environ[f"RESUME_GATEWAY_TENANTS__{n}__DATA_CENTER"] = "us"
    settings = load_settings(None, environ)
    assert [t.name for t in settings.tenants] == [f"t{n}" for n in range(12)]


def test_env_index_of_other_digits_is_a_config_error() -> None:
    """'²'.isdigit() is true, and int('²') raised a bare ValueError; it is a key, not an index."""
    with pytest.raises(ConfigError, match="tenants: Input should be a valid list"):
        load_settings(None, {"RESUME_GATEWAY_TENANTS__²__NAME": "x"})


def test_env_list_index_past_the_end_is_a_config_error(toml_file: Path) -> None:
    with pytest.raises(ConfigError, match="RESUME_GATEWAY_TENANTS__5__NAME"):
        load_settings(toml_file, {"RESUME_GATEWAY_TENANTS__5__NAME": "x"})


def test_env_field_inside_a_plain_value_is_a_config_error() -> None:
    environ = {"RESUME_GATEWAY_SERVER": "x", "RESUME_GATEWAY_SERVER__PORT": "1"}
    with pytest.raises(ConfigError, match="RESUME_GATEWAY_SERVER__PORT"):
        load_settings(None, environ)


def test_env_invalid_value_names_the_field_and_the_variable(toml_file: Path) -> None:
    """The error named the TOML path only, where the file may hold a valid value."""
    with pytest.raises(
        ConfigError, match=r"server\.port: .*\(set by RESUME_GATEWAY_SERVER__PORT\)"
    ):
        load_settings(toml_file, {"RESUME_GATEWAY_SERVER__PORT": "ninety"})


def test_env_value_that_is_broken_json_says_so(toml_file: Path) -> None:
    """A missing bracket read as "Input should be a valid list", with no word of JSON."""
    environ = {"RESUME_GATEWAY_TENANTS__0__API_KEYS": '["a",'}
    with pytest.raises(ConfigError) as caught:
        load_settings(toml_file, environ)
    assert "tenants.0.api_keys: Input should be a valid list" in str(caught.value)
    assert "set by RESUME_GATEWAY_TENANTS__0__API_KEYS; not valid JSON (" in str(caught.value)


def test_unrelated_and_config_env_vars_are_ignored(toml_file: Path) -> None:
    environ = {"RESUME_GATEWAY_CONFIG": "other.toml", "HOME": "/root", "PORT": "1"}
    assert load_settings(toml_file, environ) == load_settings(toml_file, {})


def test_an_empty_variable_is_not_called_broken_json(toml_file: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(toml_file, {"RESUME_GATEWAY_TENANTS__0__API_TOKEN": ""})
    assert "must not be empty" in str(caught.value)
    assert "JSON" not in str(caught.value)


def test_a_variant_setting_from_the_environment_names_its_variable(toml_file: Path) -> None:
    """A tagged union names its variant in the error's location (verify.hmac_sha256.header),
    where the variable does not: such an error said nothing of where its value came from."""
    path = toml_file.parent / "with-source.toml"
    path.write_text(toml_file.read_text() + SOURCE_TOML)
    environ = {"RESUME_GATEWAY_SOURCES__0__VERIFY__HEADER": "X Sig"}
    with pytest.raises(ConfigError, match=r"\(set by RESUME_GATEWAY_SOURCES__0__VERIFY__HEADER\)"):
        load_settings(path, environ)


SOURCE_TOML = """
[[sources]]
name = "s"
tenant = "acme"
verify = { scheme = "hmac_sha256", header = "X-Sig", secret = "s" }
mapping = { key = "/k", event_id = "/id", default_status = "succeeded" }
"""


def test_kubernetes_service_links_are_not_overrides(toml_file: Path) -> None:
    """A Service named resume-gateway puts these in every pod of its namespace: the gateway
    refused to start ("port: Extra inputs are not permitted")."""
    environ = {
        "RESUME_GATEWAY_SERVICE_HOST": "10.96.0.12",
        "RESUME_GATEWAY_SERVICE_PORT": "8080",
        "RESUME_GATEWAY_SERVICE_PORT_HTTP": "8080",
        "RESUME_GATEWAY_PORT": "tcp://10.96.0.12:8080",
        "RESUME_GATEWAY_PORT_8080_TCP": "tcp://10.96.0.12:8080",
        "RESUME_GATEWAY_PORT_8080_TCP_PROTO": "tcp",
        "RESUME_GATEWAY_PORT_8080_TCP_PORT": "8080",
        "RESUME_GATEWAY_PORT_8080_TCP_ADDR": "10.96.0.12",
        # another Service of the namespace: resume-gateway-headless
        "RESUME_GATEWAY_HEADLESS_SERVICE_HOST": "10.96.0.13",
        "RESUME_GATEWAY_HEADLESS_PORT": "tcp://10.96.0.13:8080",
        "RESUME_GATEWAY_HEADLESS_PORT_8080_TCP_PORT": "8080",
    }
    assert load_settings(toml_file, environ) == load_settings(toml_file, {})
    with pytest.raises(ConfigError, match="server_port"):  # a near miss is still refused
        load_settings(toml_file, {"RESUME_GATEWAY_SERVER_PORT": "9000"})


# -- secrets by reference --------------------------------------------------------------------


def test_env_secret_reference_is_resolved() -> None:
    settings = settings_from_dict(
        config(tenants=[tenant(api_token="env:WORKATO_TOKEN")]), {"WORKATO_TOKEN": "s3cr3t"}
    )
    token = settings.tenants[0].api_token
    assert token is not None
    assert token.get_secret_value() == "s3cr3t"


def test_file_secret_reference_is_resolved_and_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-file-token\n")
    key_file = tmp_path / "key"
    key_file.write_text(KEY_2)
    data = {
        "security": {"token_keys": [{"id": "k", "key": f"file:{key_file}"}]},
        "tenants": [tenant(api_token=f"file:{secret}")],
    }
    settings = settings_from_dict(data, {})
    token = settings.tenants[0].api_token
    assert token is not None
    assert token.get_secret_value() == "from-file-token"
    assert settings.security.token_keys[0].key_bytes == bytes(range(100, 132))


def test_secret_references_work_inside_lists() -> None:
    data = config(tenants=[tenant(api_keys=["env:K1", "inline-key"])])
    settings = settings_from_dict(data, {"K1": "key-from-env"})
    keys = [k.get_secret_value() for k in settings.tenants[0].api_keys]
    assert keys == ["key-from-env", "inline-key"]


def test_missing_env_secret_names_the_field() -> None:
    message = config_error(config(tenants=[tenant(api_token="env:NOT_SET")]))
    assert "tenants.0.api_token" in message
    assert "NOT_SET" in message


def test_missing_secret_file_names_the_field(tmp_path: Path) -> None:
    message = config_error(config(tenants=[tenant(api_token=f"file:{tmp_path}/missing")]))
    assert "tenants.0.api_token" in message
    assert "cannot read secret file" in message


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (config(server={"port": 70000}), "server.port"),
        (config(server={"port": "abc"}), "server.port"),
        (config(store={"url": "mysql://x"}), "store.url"),
        (config(delivery={"lease_s": 5.0, "request_timeout_s": 10.0}), "delivery"),
        (config(tenants=[tenant(rate_limit_per_minute=0)]), "tenants.0.rate_limit_per_minute"),
        (config(tenants=[tenant(name="has space")]), "tenants.0.name"),
        (config(tenants=[tenant(), tenant(name="b", api_keys=[5])]), "tenants.1.api_keys.0"),
        (config(logging={"level": "loud"}), "logging.level"),
    ],
)
def test_invalid_value_names_the_field_path(data: dict[str, Any], field: str) -> None:
    message = config_error(data)
    assert message.startswith("invalid configuration:")
    assert f"  {field}: " in message


@pytest.mark.parametrize("center", sorted(DATA_CENTERS))
def test_data_center_presets_resolve_base_urls(center: str) -> None:
    settings = settings_from_dict(config(tenants=[tenant(data_center=center)]), {})
    assert settings.tenants[0].resolved_base_url == DATA_CENTERS[center]


def test_all_documented_data_centers_exist() -> None:
    assert set(DATA_CENTERS) == {"us", "eu", "jp", "sg", "au", "il", "kr", "cn", "trial"}
    assert DATA_CENTERS["us"] == "https://www.workato.com"
    assert DATA_CENTERS["eu"] == "https://app.eu.workato.com"


def test_data_center_is_case_insensitive() -> None:
    settings = settings_from_dict(config(tenants=[tenant(data_center="EU")]), {})
    assert settings.tenants[0].resolved_base_url == "https://app.eu.workato.com"


def test_unknown_data_center_is_refused() -> None:
    message = config_error(config(tenants=[tenant(data_center="mars")]))
    assert "tenants.0.data_center: Value error, must be one of us, eu" in message


def test_base_url_trailing_slash_is_dropped() -> None:
    data = config(tenants=[tenant(data_center=None, base_url="http://localhost:9/")])
    settings = settings_from_dict(data, {})
    assert settings.tenants[0].resolved_base_url == "http://localhost:9"


@pytest.mark.parametrize(
    "fields",
    [{"base_url": "https://x.example"}, {"data_center": None}],
    ids=["both", "neither"],
)
def test_exactly_one_of_base_url_or_data_center(fields: dict[str, Any]) -> None:
    message = config_error(config(tenants=[tenant(**fields)]))
    assert "tenants.0" in message
    assert "exactly one of base_url or data_center" in message


def test_legacy_email_and_token_are_accepted() -> None:
    data = config(tenants=[tenant(api_token=None, email="a@b.c", token="legacy-tok")])
    (t,) = settings_from_dict(data, {}).tenants
    assert t.auth_headers() == {"x-user-email": "a@b.c", "x-user-token": "legacy-tok"}


def test_api_token_gives_a_bearer_header() -> None:
    (t,) = settings_from_dict(config(tenants=[tenant()]), {}).tenants
    assert t.auth_headers() == {"Authorization": "Bearer wrk-token"}


@pytest.mark.parametrize(
    "fields",
    [
        {"email": "a@b.c", "token": "legacy-tok"},
        {"api_token": None},
        {"api_token": None, "email": "a@b.c"},
        {"api_token": None, "token": "legacy-tok"},
    ],
    ids=["both", "none", "email-only", "token-only"],
)
def test_api_token_or_legacy_email_and_token(fields: dict[str, Any]) -> None:
    message = config_error(config(tenants=[tenant(**fields)]))
    assert "tenants.0" in message
    assert "give api_token, or legacy email and token" in message


def test_prod_requires_token_keys() -> None:
    message = config_error({"tenants": [tenant()]})
    assert "security.token_keys is required" in message


def test_prod_is_the_default_env() -> None:
    assert "security.token_keys is required" in config_error({})


def test_dev_does_not_require_token_keys() -> None:
    settings = settings_from_dict({"env": "dev", "tenants": [tenant()]}, {})
    assert settings.security.token_keys == []


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("not base64!!", "key must be base64"),
        ("QUJD=extra", "key must be base64"),
        (base64.b64encode(bytes(16)).decode(), "key must decode to 32 bytes"),
        (base64.b64encode(bytes(33)).decode(), "key must decode to 32 bytes"),
        ("", "must not be empty"),
    ],
)
def test_bad_token_key_is_refused_without_echoing_it(key: str, problem: str) -> None:
    message = config_error({"security": {"token_keys": [{"id": "k1", "key": key}]}})
    assert "security.token_keys.0.key" in message
    assert problem in message
    if key:
        assert key not in message


def test_duplicate_tenant_names_are_refused_naming_both() -> None:
    """The error said only "(top level): tenant names must be unique"."""
    message = config_error(config(tenants=[tenant(), tenant(name="b"), tenant(api_token="x")]))
    assert "tenants.2.name: 'acme' is the name of tenants.0 too" in message


def test_api_key_shared_by_two_tenants_is_refused_naming_where_never_what() -> None:
    data = config(
        tenants=[tenant(api_keys=["sh4red-key"]), tenant(name="b", api_keys=["sh4red-key"])]
    )
    message = config_error(data)
    assert "tenants.1.api_keys: a key is in it and in tenants.0" in message
    assert "sh4red-key" not in message
    twice = config_error(config(tenants=[tenant(api_keys=["sh4red-key", "sh4red-key"])]))
    assert "tenants.0.api_keys: a key is in it twice" in twice


def test_credential_id_is_stable_and_does_not_reveal_the_token() -> None:
    a = settings_from_dict(config(tenants=[tenant(api_token="tok-a")]), {}).tenants[0]
    again = settings_from_dict(config(tenants=[tenant(api_token="tok-a")]), {}).tenants[0]
    b = settings_from_dict(config(tenants=[tenant(api_token="tok-b")]), {}).tenants[0]
    assert a.credential_id == again.credential_id
    assert a.credential_id != b.credential_id
    assert "tok-a" not in a.credential_id


# -- describe (check-config) -----------------------------------------------------------------

SECRETS = [
    "wrk-api-token-123",
    "acme-key-1",
    "acme-key-2",
    "legacy-user-token-456",
    "admin-token-789",
    KEY_1,
    KEY_2,
]


def test_describe_never_prints_a_secret(toml_file: Path) -> None:
    text = describe(load_settings(toml_file, {}))
    for secret in SECRETS:
        assert secret not in text, secret
    assert text.count('"**********"') == len(SECRETS)


def test_describe_masks_secrets_resolved_from_env_and_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("token-from-file")
    data = config(tenants=[tenant(api_token=f"file:{secret_file}", api_keys=["env:KEY"])])
    text = describe(settings_from_dict(data, {"KEY": "key-from-env"}))
    assert "token-from-file" not in text
    assert "key-from-env" not in text
    assert '"api_token": "**********"' in text


def test_describe_says_admin_tokens_do_nothing_yet() -> None:
    """Accepted in silence, they read as if an operators' API were protected by them."""
    data = config(tenants=[tenant()], security={**config()["security"], "admin_tokens": ["a"]})
    text = describe(settings_from_dict(data, {}))
    assert "admin tokens   1, unused: this version serves no operators' API" in text
    assert "admin tokens" not in describe(settings_from_dict(config(tenants=[tenant()]), {}))


def test_describe_says_what_the_gateway_will_do(toml_file: Path) -> None:
    text = describe(load_settings(toml_file, {}))
    assert text.startswith("configuration is valid.")
    assert "listen on      http://0.0.0.0:8081 (env: prod)" in text
    assert "token keys     k2, k1 (first one encrypts)" in text
    assert "POST https://app.eu.workato.com/api/job/resume with api token, <= 30/min" in text
    assert "2 API key(s)" in text
    assert "with legacy email ops@example.com" in text


def test_describe_names_the_polled_connections() -> None:
    connection = {"name": "ayx", "kind": "alteryx", "base_url": "https://ayx.example/"}
    connection |= {"client_id": "c", "client_secret": "s3cr3t-value"}
    settings = Settings.model_validate({"env": "dev", "connections": [connection]})
    text = describe(settings)
    assert "connection ayx  polls alteryx at https://ayx.example every 15 s" in text
    assert "s3cr3t-value" not in text


def test_describe_masks_credentials_written_into_a_url() -> None:
    """A URL of https://user:password@host was printed whole, twice (a connection's base_url
    then; such a one is refused now, and the masking stays for every other URL)."""
    blobs = {"public_base_url": "https://svc:pa55w0rd@gw.example"}
    text = describe(Settings.model_validate({"env": "dev", "blobs": blobs}))
    assert "pa55w0rd" not in text
    assert "https://[redacted]@gw.example" in text


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("https://svc:pa55w0rd@ayx.example/", "must not hold credentials"),
        ("ayx.example:443", "must be an http:// or https:// URL with a host"),
        ("ftp://ayx.example", "must be an http:// or https:// URL with a host"),
    ],
)
def test_a_connection_url_no_poll_can_use_is_refused(url: str, said: str) -> None:
    """Credentials in it made the HTTP client raise beside the connection's own (a
    ValueError no poll expected: the poller died, and the gateway, at every start); without
    a scheme every poll failed."""
    connection = {"name": "ayx", "kind": "alteryx", "base_url": url}
    connection |= {"client_id": "c", "client_secret": "s3cr3t-value"}
    error = config_error(config(connections=[connection]))
    assert f"connections.0.alteryx.base_url: Value error, {said}" in error
    assert "pa55w0rd" not in error
    assert "s3cr3t-value" not in error


def test_a_secret_that_is_not_utf8_is_refused_by_its_field() -> None:
    """From an environment in another encoding it held a lone surrogate: the token request
    could not encode it, the poller died, and its traceback quoted a character of it."""
    data = config(tenants=[tenant(api_keys=["env:KEY"])])
    assert "tenants.0.api_keys.0: Value error, is not UTF-8" in config_error(
        data, {"KEY": "k\udce9y"}
    )


def test_an_alteryx_client_id_with_a_colon_is_a_config_error_naming_it() -> None:
    """HTTP Basic's user-id cannot hold one: aiohttp raised at the first poll, the poller
    died and the gateway with it."""
    connection = {"name": "ayx", "kind": "alteryx", "base_url": "https://ayx.example/"}
    connection |= {"client_id": "tenant:client", "client_secret": "s3cr3t-value"}
    error = config_error(config(connections=[connection]))
    assert (
        "connections.0.alteryx.client_id: Value error, must be non-empty and hold no ':'" in error
    )
    assert "s3cr3t-value" not in error


def test_describe_in_dev_without_keys() -> None:
    text = describe(Settings(env="dev"))
    assert "none: `run` needs one (only `dev` makes its own)" in text


def test_a_credential_sent_as_a_header_may_hold_no_line_break() -> None:
    """aiohttp refuses such a header on every request: a Pixxel key read from an environment
    variable with a trailing CR LF ended the poller, and the gateway, at each poll."""
    pixxel = {"name": "px", "kind": "pixxel", "base_url": "http://px", "api_key": "env:PX"}
    message = config_error(config(connections=[pixxel]), {"PX": "px-secret-77\r\n"})
    assert "connections.0.pixxel.api_key" in message
    assert "control character" in message
    assert "px-secret-77" not in message
    message = config_error(config(tenants=[tenant(api_token="wrk\ntoken")]))
    assert "tenants.0.api_token" in message
    legacy = {"api_token": None, "email": "ops@example.com\r\n", "token": "legacy-token"}
    assert "tenants.0.email" in config_error(config(tenants=[tenant(**legacy)]))


def test_two_token_keys_under_one_id_are_refused() -> None:
    """The cipher kept the last of them, though the first is the one said to encrypt: tokens
    sealed with the other no longer opened (their deliveries dead, token_key_missing)."""
    keys = [{"id": "k1", "key": KEY_1}, {"id": "k1", "key": KEY_2}]
    message = config_error({"security": {"token_keys": keys}})
    assert "security.token_keys.1.id" in message
    assert KEY_2 not in message


@pytest.mark.parametrize("value", ["inf", "nan", "1e400"])
def test_an_infinite_duration_is_refused_where_it_is_set(value: str) -> None:
    """``url_grace_s = inf`` passed ``gt=0``; every claim check then raised OverflowError."""
    with pytest.raises(ConfigError, match=r"blobs\.url_grace_s"):
        load_settings(None, {"RESUME_GATEWAY_BLOBS__URL_GRACE_S": value})


def test_a_url_grace_past_a_year_is_refused() -> None:
    """1e12 s made the URL's expiry a year past 9999: every claim check raised ValueError."""
    message = config_error(config(blobs={"url_grace_s": 1e12}))
    assert "blobs.url_grace_s" in message


@pytest.mark.parametrize("reference", ["ENV:WORKATO_TOKEN", "Env:WORKATO_TOKEN", "FILE:/run/x"])
def test_a_secret_reference_in_the_wrong_case_is_refused(reference: str) -> None:
    """It was taken, and masked, as the secret itself: check-config said the file was valid."""
    message = config_error(config(tenants=[tenant(api_token=reference)]))
    assert "tenants.0.api_token" in message
    assert "in lower case" in message


@pytest.mark.parametrize(
    ("fields", "environ", "field"),
    [
        ({"api_token": "env:WORKATO_TOKEN"}, {"WORKATO_TOKEN": ""}, "tenants.0.api_token"),
        ({"api_keys": ["k1", ""]}, {}, "tenants.0.api_keys.1"),
    ],
)
def test_an_empty_credential_is_refused_by_its_field(
    fields: dict[str, Any], environ: dict[str, str], field: str
) -> None:
    """Accepted, an empty API key could never be sent, and an empty api_token made
    check-config describe the tenant as legacy, "with legacy email None"."""
    problem = config_error(config(tenants=[tenant(**fields)]), environ)
    assert f"{field}: Value error, must not be empty" in problem


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"api_token": None}, "(email and token missing)"),
        ({"api_token": None, "email": "ops@example.com"}, "(token missing)"),
        ({"email": "ops@example.com"}, "not both"),  # was taken, the email ignored
    ],
)
def test_a_tenant_credential_problem_says_which(fields: dict[str, Any], said: str) -> None:
    """Giving none read "give api_token, or legacy email and token, not both"."""
    data = tenant(**fields)
    data = {k: v for k, v in data.items() if v is not None}
    assert said in config_error(config(tenants=[data]))


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("not a url", "must be an http:// or https:// URL with a host"),
        ("ftp://www.workato.com", "must be an http:// or https:// URL with a host"),
        ("https://www.workato.com/api", "must be an origin with no path"),
        ("https://www.workato.com/en/", "must be an origin with no path"),
        ("https://www.workato.com?x=1", "must not have a query"),
    ],
)
def test_a_base_url_resumes_could_not_reach_is_refused(url: str, said: str) -> None:
    """Taken as given, every resume went to "not a url/api/job/resume" or to
    ".../api/api/job/resume" (or /en/api/...): a route 404, each delivery ended dead."""
    problem = config_error(config(tenants=[tenant(data_center=None, base_url=url)]))
    assert f"tenants.0.base_url: Value error, {said}" in problem


def test_a_base_url_with_its_default_port_is_the_presets_credential() -> None:
    """Spelt with :443 it was another credential id, so another rate window: up to twice the
    limit between the two spellings, and the stored sends of one not read by the other."""
    by_preset = tenant()
    by_url = tenant(data_center=None, base_url="https://WWW.workato.com:443/")
    settings = settings_from_dict(config(tenants=[by_preset, {**by_url, "name": "b"}]), {})
    preset, url = settings.tenants
    assert preset.credential_id == url.credential_id
