"""Configuration: flags > env > ec.toml > defaults; masking; malformed input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ectool import config, paths
from ectool.cli import cli
from ectool.errors import ConfigError


def write_config(text: str | bytes):
    path = paths.config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_defaults_are_embedded_sqlite(isolated_home):
    cfg = config.load()
    assert cfg.db.startswith("sqlite:///") and cfg.db.endswith("/elasticcode/ec.db")
    assert cfg.broker.startswith("sqlite:///") and str(isolated_home) in cfg.broker
    assert cfg.sources["db"] == "default"


def test_resolution_order(monkeypatch):
    write_config('db = "sqlite:////from/file.db"\nbroker = "amqp://u:pw@h/%2F"\ndelivery_limit = 7\n')
    cfg = config.load()
    assert (cfg.db, cfg.delivery_limit) == ("sqlite:////from/file.db", 7)
    monkeypatch.setenv("EC_DB", "sqlite:////from/env.db")
    assert config.load().db == "sqlite:////from/env.db"
    cfg = config.load(db="postgresql://x@h/db")
    assert cfg.db == "postgresql://x@h/db" and cfg.sources["db"] == "flag"
    assert cfg.sources["broker"].endswith("ec.toml")


def test_ec_config_points_at_another_file(tmp_path, monkeypatch):
    other = tmp_path / "other.toml"
    other.write_text('db = "sqlite:////elsewhere.db"\n')
    monkeypatch.setenv("EC_CONFIG", str(other))
    assert config.load().db == "sqlite:////elsewhere.db"


def test_passwords_are_masked():
    write_config('broker = "amqp://guest:s3cret@rabbit:5672/%2F"\ndb = "postgresql://me:pw@db/ec"\n')
    result = CliRunner().invoke(cli, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["broker"] == "amqp://guest:***@rabbit:5672/%2F"
    assert shown["db"] == "postgresql://me:***@db/ec"
    assert "s3cret" not in result.output and ":pw@" not in result.output


@pytest.mark.parametrize("text, message", [
    ("db = [unclosed", "malformed config file"),
    ("db = " + "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (b'db = "\xff"\n', "not UTF-8"),
    ('bogus = 1\n', "unknown key"),
    ('db = "mysql://x"\n', "scheme must be one of"),
    ('broker = "nothing"\n', "bad broker URL"),
    ('db = "postgresql://me:s3cret@[::1/ec"\n', "bad host or port"),
    ('broker = "amqp://me:s3cret@rabbit:99999/"\n', "bad host or port"),
    ('db = "postgresql://me:s3/cret@db:5432/ec"\n', "bad host or port"),  # an unencoded / in it
    ('delivery_limit = inf\n', "must be an integer"),
    ('delivery_limit = true\n', "must be an integer"),
    ('delivery_limit = 2.5\n', "must be an integer"),
    ('delivery_limit = "many"\n', "must be an integer"),
    ('queue_type = "lazy"\n', "quorum"),
    ('stats_retention = "forever"\n', "stats_retention"),
    ('stats_retention = "30s"\n', "at least a minute"),
])
def test_bad_config_is_one_line_exit_2(text, message):
    write_config(text)
    with pytest.raises(ConfigError, match=message):
        config.load()
    result = CliRunner().invoke(cli, ["ls", "processors"])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert "s3cret" not in result.output and "s3/" not in result.output and "cret@" not in result.output


def test_a_broken_config_file_can_still_be_replaced():
    write_config("delivery_limit = inf\n")
    result = CliRunner().invoke(cli, ["config", "init", "--force"])
    assert result.exit_code == 0, result.output
    assert config.load().delivery_limit == config.KEYS["delivery_limit"][1]


def test_config_init_writes_commented_file_and_refuses_overwrite():
    runner = CliRunner()
    result = runner.invoke(cli, ["config", "init"])
    assert result.exit_code == 0
    text = paths.config_file().read_text()
    assert "# db =" in text and "broker" in text
    config.load()  # a fresh, fully commented file must parse
    again = runner.invoke(cli, ["config", "init"])
    assert again.exit_code == 2 and "--force" in again.output


def test_stats_retention_default_file_and_env(monkeypatch):
    cfg = config.load()
    assert (cfg.stats_retention, cfg.sources["stats_retention"]) == ("30d", "default")
    write_config('stats_retention = "12h"\n')
    assert config.load().stats_retention == "12h"
    monkeypatch.setenv("EC_STATS_RETENTION", "90m")
    cfg = config.load()
    assert (cfg.stats_retention, cfg.sources["stats_retention"]) == ("90m", "env EC_STATS_RETENTION")
    monkeypatch.setenv("EC_STATS_RETENTION", "-1d")
    with pytest.raises(ConfigError, match="stats_retention from env EC_STATS_RETENTION"):
        config.load()


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("10m", 600), ("2h", 7200), ("30d", 2_592_000),
                                           ("1.5h", 5400), ("86400", 86400), (" 7d ", 604_800)])
def test_duration(text, seconds):
    assert config.duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "soon", "5w", "nan", "inf"])
def test_duration_rejects(text):
    with pytest.raises(ValueError):
        config.duration(text)


def test_config_init_documents_stats_retention():
    CliRunner().invoke(cli, ["config", "init"])
    text = paths.config_file().read_text()
    assert '# stats_retention = "30d"' in text
    write_config(text.replace('# stats_retention = "30d"', 'stats_retention = "7d"'))
    assert config.load().stats_retention == "7d"


@pytest.mark.parametrize("key,env,default,in_file,in_env,bad", [
    ("ack_deadline", "EC_ACK_DEADLINE", 900, 300, 60, ("0", "-5", "soon")),
    ("bundle", "EC_BUNDLE", 16, 4, 1, ("0", "1001", "many", "2.5")),
])
def test_integer_settings_default_file_env_and_bad_values(monkeypatch, key, env, default, in_file, in_env, bad):
    assert getattr(config.load(), key) == default
    write_config(f"{key} = {in_file}\n")
    assert getattr(config.load(), key) == in_file
    monkeypatch.setenv(env, str(in_env))
    assert getattr(config.load(), key) == in_env
    for value in bad:
        monkeypatch.setenv(env, value)
        with pytest.raises(ConfigError, match=f"{key} from env {env}"):
            config.load()
