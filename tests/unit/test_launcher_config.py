"""The launcher's config file: parsing, the errors a broken file gives, round trips, where it lives."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from client import config
from client.sdk.connection import ConfigError, resolve_token

PRODUCT = "7d3f7f4e-6f2c-4c55-9d0b-4b8f5b1b2a10"


def test_a_config_round_trips_through_its_file_readable_by_its_owner_only(tmp_path):
    written = config.LauncherConfig(target="games:443", token="t0k", device_id="pc").with_product(
        PRODUCT.upper(), save_dir=tmp_path / "old"
    )
    written = written.with_product(PRODUCT, save_dir=tmp_path / "saves")

    path = config.save(tmp_path / "cfg", written)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = config.load(tmp_path / "cfg")
    assert loaded == written
    assert loaded.products == {PRODUCT: config.ProductPaths(tmp_path / "saves")}
    assert loaded.product("5b1c2d3e-0000-4000-8000-000000000000") == config.ProductPaths()


def test_a_missing_or_empty_file_is_an_empty_config(tmp_path):
    assert config.load(tmp_path / "nowhere") == config.LauncherConfig()
    assert config.parse("  \n") == config.LauncherConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "config.json is not valid JSON"),
        ("[1]", "config.json must hold a JSON object"),
        ('{"token": 5}', "config.json: token must be a string"),
        ('{"products": []}', "config.json: products must be an object"),
        ('{"products": {"x": {}}}', "products key 'x' is not a product id"),
        (json.dumps({"products": {PRODUCT: {"saveDir": 1}}}), f"products.{PRODUCT}.saveDir must be a string"),
        (json.dumps({"products": {PRODUCT: "dir"}}), f"products.{PRODUCT} must be an object"),
    ],
)
def test_a_broken_file_names_the_problem(text, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
        config.parse(text)


def test_unknown_keys_are_ignored_and_relative_paths_kept_as_written():
    parsed = config.parse(json.dumps({"future": 1, "products": {PRODUCT: {"saveDir": "saves"}}}))
    assert parsed.product(PRODUCT).save_dir == Path("saves")


def test_the_config_directory_comes_from_the_option_then_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("LIBRARY_CONFIG_DIR", raising=False)
    monkeypatch.delenv("LIBRARY_STATE_DIR", raising=False)
    assert config.config_dir() == Path.home() / ".config" / "library-client"
    assert config.state_dir() == Path.home() / ".local" / "state" / "library-client"
    monkeypatch.setenv("LIBRARY_CONFIG_DIR", str(tmp_path / "env"))
    assert config.config_dir() == tmp_path / "env"
    assert config.state_dir() == tmp_path / "env"
    assert config.config_dir(tmp_path / "flag") == tmp_path / "flag"
    assert config.state_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.setenv("LIBRARY_STATE_DIR", str(tmp_path / "state"))
    assert config.state_dir(tmp_path / "flag") == tmp_path / "state"


def test_the_stored_token_is_the_last_resort(monkeypatch, tmp_path):
    monkeypatch.delenv("LIBRARY_TOKEN", raising=False)
    monkeypatch.delenv("LIBRARY_TOKEN_FILE", raising=False)
    assert resolve_token(stored="from-login") == "from-login"
    monkeypatch.setenv("LIBRARY_TOKEN", "from-env")
    assert resolve_token(stored="from-login") == "from-env"
    monkeypatch.delenv("LIBRARY_TOKEN")
    with pytest.raises(ConfigError, match="run `login`"):
        resolve_token()
