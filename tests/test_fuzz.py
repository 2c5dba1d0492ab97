"""Property tests: no input makes the decoder, the argument parsers or the CLI crash."""

from __future__ import annotations

import json

from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ectool.arguments import parse_data, parse_word, stdin_value
from ectool.cli import cli
from ectool.errors import UsageError
from ectool.messages import BadMessage, CallMessage, decode

# a busy CI machine makes input generation slow now and then: a property test must not
# fail for that (deadline and too_slow are about speed, not about what is asserted)
settings.register_profile("ec", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ec")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12)


@given(st.binary(max_size=300))
def test_decoder_never_crashes_on_bytes(body):
    try:
        decode(body)
    except BadMessage:
        pass


@given(st.dictionaries(st.sampled_from(["v", "id", "socket", "task", "args", "kwargs", "attempt", "cont",
                                         "root", "reply_to"]), json_values, max_size=10))
def test_decoder_never_crashes_on_json_objects(obj):
    try:
        decode(json.dumps(obj, default=lambda b: b.hex()).encode())
    except BadMessage:
        pass


@given(st.lists(json_values, max_size=4), st.dictionaries(st.text(max_size=5), json_values, max_size=3))
def test_any_json_payload_round_trips(args, kwargs):
    msg = CallMessage(id="i", socket="s", task="t", args=args, kwargs=kwargs)
    back = decode(msg.encode())
    assert back.args == args and back.kwargs == {str(k): v for k, v in kwargs.items()}


@given(st.text(max_size=200))
def test_word_and_data_parsing_never_crash(text):
    parse_word(text)
    try:
        parse_data(text)
    except UsageError:
        pass


@given(st.binary(max_size=200))
def test_stdin_is_text_or_bytes(raw):
    value = stdin_value(raw)
    assert isinstance(value, str | bytes)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                        max_size=12), max_size=5))
def test_cli_never_prints_a_traceback(tmp_path_factory, words):
    # long-running commands (daemons, live views, the demo) are exercised elsewhere
    assume(not words or words[0] not in ("worker", "agent", "demo", "dash", "listen", "top", "map", "flow"))
    home = tmp_path_factory.mktemp("fuzz")
    result = CliRunner().invoke(cli, ["--db", f"sqlite:///{home}/ec.db", "--broker", f"sqlite:///{home}/q.db",
                                      *words], input="")
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
