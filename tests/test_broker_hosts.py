"""Several RabbitMQ nodes in one broker URL: the split and the order they are tried in
(pure, table-driven), then an unreachable node in the list against the real RabbitMQ."""

from __future__ import annotations

import json
import logging
import socket

import pytest
from click.testing import CliRunner

from ectool.broker_hosts import rotate, split
from ectool.cli import cli
from ectool.errors import ConfigError


@pytest.mark.parametrize("url, hosts, urls", [
    ("amqp://u:p@h:5672/%2F", ("h:5672",), ["amqp://u:p@h:5672/%2F"]),
    ("amqp://u:p@h/v", ("h:5672",), ["amqp://u:p@h:5672/v"]),
    ("amqps://u:p@h1,h2:5999/v?cafile=/ca.pem", ("h1:5671", "h2:5999"),
     ["amqps://u:p@h1:5671/v?cafile=/ca.pem", "amqps://u:p@h2:5999/v?cafile=/ca.pem"]),
    ("amqp://u:p@a:1,b:2,c:3/%2F", ("a:1", "b:2", "c:3"),
     ["amqp://u:p@a:1/%2F", "amqp://u:p@b:2/%2F", "amqp://u:p@c:3/%2F"]),
    ("amqp://u:p,w@a:1, b:2", ("a:1", "b:2"), ["amqp://u:p,w@a:1", "amqp://u:p,w@b:2"]),  # "," in a password
    ("amqp://u:p@[::1]:5672,[fe80::1]/v", ("[::1]:5672", "[fe80::1]:5672"),
     ["amqp://u:p@[::1]:5672/v", "amqp://u:p@[fe80::1]:5672/v"]),
    ("amqp://a:1,b:2", ("a:1", "b:2"), ["amqp://a:1", "amqp://b:2"]),  # no credentials
])
def test_split(url, hosts, urls):
    parts = split(url)
    assert parts.hosts == hosts
    assert parts.urls() == urls


@pytest.mark.parametrize("url, message", [
    ("amqp://u:p@a:1,,b:2/v", "host 2 of 3 is empty"),
    ("amqp://u:p@a:1,b:x/v", "host 2 of 2 ('b:x') has a bad host or port"),
    ("amqp://u:p@a:1,b:99999/v", "host 2 of 2 ('b:99999') has a bad host or port"),
    ("amqp://u:p@a:1,b c:2/v", "host 2 of 2 ('b c:2') is not HOST or HOST:PORT"),
    ("amqp://u:p@/v", "the host is empty"),
    ("amqp://u:p@a:1,[::1/v", "has a bad host or port"),
])
def test_split_refuses_bad_hosts(url, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        split(url)


@pytest.mark.parametrize("urls, start, order", [
    ([], 3, []),
    (["a"], 5, ["a"]),
    (["a", "b", "c"], 0, ["a", "b", "c"]),
    (["a", "b", "c"], 1, ["b", "c", "a"]),
    (["a", "b", "c"], 2, ["c", "a", "b"]),
    (["a", "b", "c"], 4, ["b", "c", "a"]),
])
def test_rotate(urls, start, order):
    assert rotate(urls, start) == order


@pytest.mark.parametrize("broker, message", [
    ("amqp://u:s3cret@a:5672,b:x/%2F", "bad broker URL 'amqp://u:***@a:5672,b:x/%2F': host 2 of 2"),
    ("amqp://u:s3cret@a:5672,,c/%2F", "host 2 of 3 is empty"),
])
def test_a_bad_host_in_the_list_is_one_line_exit_2(monkeypatch, broker, message):
    monkeypatch.setenv("EC_BROKER", broker)
    result = CliRunner().invoke(cli, ["config", "show"])
    assert result.exit_code == 2
    assert message in result.output and "s3cret" not in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_config_show_masks_the_list(monkeypatch):
    monkeypatch.setenv("EC_BROKER", "amqp://ec:s3cret@mq1:5672,mq2:5672,mq3:5672/net")
    result = CliRunner().invoke(cli, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["broker"] == "amqp://ec:***@mq1:5672,mq2:5672,mq3:5672/net"
    assert "s3cret" not in result.output


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed


def test_an_unreachable_node_is_skipped(amqp_url, queue_name, caplog):
    """A dead node first in the list: the connection goes to the next one, with a warning,
    and what is published there is there."""
    from ectool.broker_hosts import split as split_url
    from ectool.transport import amqp_connection, connect

    live = split_url(amqp_url).hosts[0]
    dead = f"127.0.0.1:{closed_port()}"
    url = amqp_url.replace(live, f"{dead},{live}", 1)
    amqp_connection._preferred[url] = 0  # the dead node first
    with caplog.at_level(logging.WARNING, logger="ectool.transport.amqp"), connect(url) as t:
        t.declare(queue_name)
        t.publish(queue_name, [b"one", b"two"])
        assert t.depth(queue_name) == 2
        t.delete_queue(queue_name)
    assert f"RabbitMQ node unreachable ({dead}: Connection refused); producer connected to {live}" in caplog.text
    assert amqp_connection._preferred[url] == 1  # the next connection starts at the node that answered


def test_no_node_reachable_is_exit_3_naming_how_many(monkeypatch):
    ports = [closed_port(), closed_port()]
    monkeypatch.setenv("EC_BROKER", f"amqp://guest:s3cret@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/%2F")
    result = CliRunner().invoke(cli, ["dead"])
    assert result.exit_code == 3, result.output
    assert result.output.count("\n") == 1
    assert "cannot reach RabbitMQ: none of the 2 nodes" in result.output and "s3cret" not in result.output
    assert "Traceback" not in result.output
