"""Unit tests for gateway.settings: GATEWAY_* environment, CLI overrides, and clear errors."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.settings import Settings, SettingsError, load_settings

SECRET = "s3cr3t-value-that-is-long-enough"
ADMIN_TOKEN = "admin-token-long-enough"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults_without_environment():
    s = load_settings()
    assert s.redis_url is None
    assert s.policy == Path("policies")
    assert s.state_dir == Path(".gateway")
    assert s.http_host == "127.0.0.1"
    assert s.http_port == 8000
    assert s.admin_token is None
    assert s.reward_secret is None
    assert s.max_instances == 1000
    assert s.max_body_bytes == 1 << 20
    assert (s.ingress, s.variant_placement, s.router_replicas) == ("fast", "router", 1)


@pytest.mark.parametrize(("name", "value"), [("GATEWAY_ROUTER_REPLICAS", "0"), ("GATEWAY_VARIANT_PLACEMENT", "gpu"),
                                             ("GATEWAY_INGRESS", "haproxy")])
def test_serving_shape_is_validated(clean_env, name, value):
    clean_env.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_reads_gateway_environment(clean_env):
    clean_env.setenv("GATEWAY_REDIS_URL", "redis://cache:6379/2")
    clean_env.setenv("GATEWAY_POLICY", "/etc/gateway/policies")
    clean_env.setenv("GATEWAY_STATE_DIR", "/var/lib/gateway")
    clean_env.setenv("GATEWAY_HTTP_HOST", "0.0.0.0")
    clean_env.setenv("GATEWAY_HTTP_PORT", "9090")
    clean_env.setenv("GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
    clean_env.setenv("GATEWAY_REWARD_SECRET", SECRET)
    clean_env.setenv("GATEWAY_REWARD_SECRET_PREVIOUS", "old-secret-0123456789")
    clean_env.setenv("GATEWAY_POSTERIOR_REFRESH_S", "0.5")
    clean_env.setenv("GATEWAY_MAX_INSTANCES", "50")
    clean_env.setenv("GATEWAY_RAY_ADDRESS", "ray://head:10001")
    s = load_settings()
    assert s.redis_url == "redis://cache:6379/2"
    assert s.policy == Path("/etc/gateway/policies")
    assert s.state_dir == Path("/var/lib/gateway")
    assert s.http_host == "0.0.0.0"
    assert s.http_port == 9090
    assert s.admin_token == ADMIN_TOKEN
    assert s.reward_secret == SECRET
    assert s.reward_secret_previous == "old-secret-0123456789"
    assert s.posterior_refresh_s == 0.5
    assert s.max_instances == 50
    assert s.ray_address == "ray://head:10001"


def test_env_names_are_case_insensitive(clean_env):
    clean_env.setenv("gateway_http_port", "9191")
    assert load_settings().http_port == 9191


def test_unprefixed_variables_are_not_read(clean_env):
    clean_env.setenv("HTTP_PORT", "9999")
    assert load_settings().http_port == 8000


def test_cli_overrides_win_over_environment(clean_env, tmp_path):
    clean_env.setenv("GATEWAY_HTTP_PORT", "9090")
    clean_env.setenv("GATEWAY_POLICY", "/from/env")
    clean_env.setenv("GATEWAY_STATE_DIR", "/from/env/state")
    s = load_settings(http_port=7070, policy=tmp_path / "p.yaml", state_dir=tmp_path)
    assert s.http_port == 7070
    assert s.policy == tmp_path / "p.yaml"
    assert s.state_dir == tmp_path


def test_unset_cli_options_leave_the_environment_value(clean_env):
    # The CLI passes None for every flag the user did not give.
    clean_env.setenv("GATEWAY_HTTP_PORT", "9090")
    s = load_settings(http_port=None, policy=None, state_dir=None)
    assert s.http_port == 9090
    assert s.policy == Path("policies")


@pytest.mark.parametrize("value", ["abc", "70000", "0", "-1", "80.5"])
def test_bad_port_names_the_variable_and_the_value(clean_env, value):
    clean_env.setenv("GATEWAY_HTTP_PORT", value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    msg = str(info.value)
    assert "GATEWAY_HTTP_PORT" in msg
    assert value in msg


def test_bad_cli_port_is_a_settings_error(clean_env):
    with pytest.raises(SettingsError) as info:
        load_settings(http_port=70000)
    assert "GATEWAY_HTTP_PORT" in str(info.value) and "70000" in str(info.value)


def test_every_bad_value_is_reported(clean_env):
    clean_env.setenv("GATEWAY_HTTP_PORT", "abc")
    clean_env.setenv("GATEWAY_MAX_INSTANCES", "0")
    clean_env.setenv("GATEWAY_POSTERIOR_REFRESH_S", "120")
    with pytest.raises(SettingsError) as info:
        load_settings()
    msg = str(info.value)
    assert "GATEWAY_HTTP_PORT" in msg
    assert "GATEWAY_MAX_INSTANCES" in msg
    assert "GATEWAY_POSTERIOR_REFRESH_S" in msg


def test_too_short_reward_secret_is_refused_without_showing_it(clean_env):
    short = "tiny-pw-42"
    clean_env.setenv("GATEWAY_REWARD_SECRET", short)
    with pytest.raises(SettingsError) as info:
        load_settings()
    msg = str(info.value)
    assert "GATEWAY_REWARD_SECRET" in msg
    assert short not in msg
    assert info.value.__cause__ is None or short not in str(info.value.__cause__)
    assert info.value.__suppress_context__


def test_short_secret_is_hidden_even_next_to_other_errors(clean_env):
    short = "tiny-pw-42"
    clean_env.setenv("GATEWAY_REWARD_SECRET", short)
    clean_env.setenv("GATEWAY_HTTP_PORT", "abc")
    with pytest.raises(SettingsError) as info:
        load_settings()
    msg = str(info.value)
    assert "GATEWAY_REWARD_SECRET" in msg and "GATEWAY_HTTP_PORT" in msg
    assert short not in msg


def test_reward_secret_of_sixteen_characters_is_accepted(clean_env):
    clean_env.setenv("GATEWAY_REWARD_SECRET", "x" * 16)
    assert load_settings().reward_secret == "x" * 16


def test_settings_class_reads_the_same_environment(clean_env):
    clean_env.setenv("GATEWAY_HTTP_PORT", "9292")
    assert Settings().http_port == 9292


def test_too_short_admin_token_is_refused_without_showing_it(clean_env):
    short = "admin-15-chars!"
    assert len(short) == 15
    clean_env.setenv("GATEWAY_ADMIN_TOKEN", short)
    with pytest.raises(SettingsError) as info:
        load_settings()
    msg = str(info.value)
    assert "GATEWAY_ADMIN_TOKEN" in msg and "16" in msg
    assert short not in msg


def test_admin_token_of_sixteen_characters_is_accepted(clean_env):
    clean_env.setenv("GATEWAY_ADMIN_TOKEN", "t" * 16)
    assert load_settings().admin_token == "t" * 16


def test_max_body_bytes_is_one_setting_read_by_the_http_layer(clean_env):
    from gateway.api.http import DEFAULT_MAX_BODY_BYTES

    field = Settings.model_fields["max_body_bytes"]
    assert DEFAULT_MAX_BODY_BYTES == field.default == load_settings().max_body_bytes
    assert "bytes" in field.description and "413" in field.description
    clean_env.setenv("GATEWAY_MAX_BODY_BYTES", "65536")
    assert load_settings().max_body_bytes == 65536


@pytest.mark.parametrize("value", ["0", "-5", "1mb", "1023"])
def test_bad_max_body_bytes_names_the_variable_and_the_value(clean_env, value):
    clean_env.setenv("GATEWAY_MAX_BODY_BYTES", value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "GATEWAY_MAX_BODY_BYTES" in str(info.value) and value in str(info.value)


def test_grpc_is_off_unless_a_port_is_given(clean_env):
    assert load_settings().grpc_port is None
    clean_env.setenv("GATEWAY_GRPC_PORT", "8001")
    assert load_settings().grpc_port == 8001


@pytest.mark.parametrize("value", ["0", "70000", "grpc", "8000"])
def test_bad_grpc_port_names_the_variable_and_the_value(clean_env, value):
    clean_env.setenv("GATEWAY_GRPC_PORT", value)  # 8000 is the HTTP port's default
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert f"GATEWAY_GRPC_PORT={value!r}" in str(info.value)
