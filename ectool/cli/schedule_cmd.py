"""``ec add schedule``, ``ec schedule pause|resume|ls|show``: periodic and cron calls."""

from __future__ import annotations

import click

from ..output import render, render_one
from . import complete
from .env import Env
from .group import pass_env

json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
last_option = click.option("--last", default=5, show_default=True, type=click.IntRange(min=0),
                           help="Schedules: show this many of the latest ticks, with their calls' status.")


@click.command("schedule")
@click.option("-n", "--name", required=True, help="Schedule name.")
@click.option("-s", "--socket", shell_complete=complete.sockets, help="Socket to call (its plugs carry the call on: a pipeline).")
@click.option("-w", "--workflow", shell_complete=complete.workflows, help="Or: a named workflow to start (a pipeline/parallel/funnel; "
              "ec compose defines them, ec ls workflows lists them); ARGS go to its first calls.")
@click.option("--every", help="Interval: 30s, 10m, 2h, 1d (ticks at creation + k * interval).")
@click.option("--cron", help='Five-field cron expression ("*/5 * * * *", "0 9 * * mon-fri", @daily).')
@click.option("--data", help="The call's arguments as one JSON or Python literal (list: positional, "
              "dict: keywords).")
@click.option("--catch-up", "catch_up", default="skip", show_default=True, type=click.Choice(["skip", "one", "all"]),
              help="Ticks missed while no agent ran (later than the grace): skip them, fire the latest one, "
                   "or fire each.")
@click.option("--grace", help="How late a tick may fire and still count as on time (default: a tenth of "
              "the interval, 5 s to 1 h).")
@click.option("--timezone", "--tz", "timezone", default="UTC", show_default=True,
              help="IANA time zone of --cron (Europe/Berlin); DST: a skipped time fires at the gap's end, "
                   "a repeated one once.")
@click.option("--jitter", help="Delay each tick by up to this long (the same delay for every agent).")
@click.option("--paused", is_flag=True, help="Create it paused (ec schedule resume NAME).")
@click.argument("args", nargs=-1)
@json_option
@pass_env
def add_schedule(env: Env, name, socket, workflow, every, cron, data, catch_up, grace, timezone, jitter, paused,
                 args, as_json) -> None:
    """Add a schedule: call SOCKET (or start WORKFLOW) every interval or on a cron
    expression, fired by whichever agent runs (no beat process). ARGS are parsed as in ec run.

    \b
    Examples:
      ec add schedule -n nightly --socket report --cron "0 2 * * *" --tz Europe/Berlin
      ec add schedule -n tick --socket add_two --every 10s 3 4
      ec add schedule -n etl --workflow etl --every 1h
    """
    from .. import schedules
    from ..arguments import parse_data, parse_word
    from ..errors import UsageError

    if data is not None and args:
        raise UsageError("give the arguments as ARGS or --data, not both")
    a, k = parse_data(data) if data is not None else ([parse_word(w) for w in args], {})
    env.store()
    row = schedules.add(name, socket, workflow=workflow, every=every, cron=cron, args=a, kwargs=k,
                        catch_up=catch_up, timezone=timezone, jitter=jitter, grace=grace, paused=paused)
    if as_json:
        render_one(schedules.to_row(row), as_json=True)
    else:
        click.echo(f"added schedule {name}: next tick {schedules.to_row(row)['next_tick']}", err=True)


@click.group()
def schedule() -> None:
    """Pause, resume, list or show schedules (ec add schedule creates them)."""


@schedule.command("pause")
@click.argument("name")
@pass_env
def pause(env: Env, name) -> None:
    """Stop firing NAME's ticks (none counts as missed while paused)."""
    from .. import schedules

    env.store()
    schedules.set_paused(name, True)
    click.echo(f"schedule {name}: paused", err=True)


@schedule.command("resume")
@click.argument("name")
@pass_env
def resume(env: Env, name) -> None:
    """Fire NAME's ticks again, from the first one after now."""
    from .. import schedules

    env.store()
    row = schedules.set_paused(name, False)
    click.echo(f"schedule {name}: resumed, next tick {schedules.to_row(row)['next_tick']}", err=True)


@schedule.command("ls")
@json_option
@pass_env
def ls_cmd(env: Env, as_json) -> None:
    """List schedules (as ec ls schedules)."""
    env.store()
    list_schedules(as_json)


@schedule.command("show")
@click.argument("name")
@last_option
@json_option
@pass_env
def show_cmd(env: Env, name, last, as_json) -> None:
    """Show one schedule (as ec show schedule NAME)."""
    env.store()
    show_schedule(name, as_json, last)


@schedule.command("calls")
@click.argument("name")
@click.option("--status", help="Only calls in this status.")
@click.option("--limit", default=100, show_default=True, type=int, help="At most this many, newest tick first.")
@json_option
@pass_env
def calls_cmd(env: Env, name, status, limit, as_json) -> None:
    """List the calls NAME's ticks made (as ec ls calls --schedule NAME)."""
    env.store()
    list_calls(name, status, limit, as_json)


def list_schedules(as_json: bool) -> None:
    from .. import schedules

    render(schedules.list_schedules(), schedules.COLUMNS, as_json=as_json)


def show_schedule(name: str, as_json: bool, last: int = 5) -> None:
    from .. import schedules

    out = schedules.show(name, last=last)
    if as_json:
        render_one(out, as_json=True)
        return
    ticks = out.pop("last_ticks")
    render_one(out)
    if ticks:
        click.echo(f"\nlast {len(ticks)} tick(s):")
        render(ticks, ["tick", "call", "status"])


def list_calls(name: str, status: str | None, limit: int, as_json: bool) -> None:
    from .. import schedules

    render(schedules.calls(name, limit, status), schedules.CALL_COLUMNS, as_json=as_json)


def list_workflows(as_json: bool) -> None:
    from .. import workflow_defs

    render(workflow_defs.list_workflows(), ["name", "kind", "sockets"], as_json=as_json)
