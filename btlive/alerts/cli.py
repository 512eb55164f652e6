"""``btlive alerts ...``: check the alert channels and the outbox without running a strategy.

- ``test``: send one test alert through every configured channel and report each outcome; with
  no email or SMS channel it says so and fails. A test alert never outlives the command: what it
  could not deliver is cancelled, never sent at the next start;
- ``pending``: list the deliveries the outbox still owes;
- ``flush``: send them now (what the next start would do); fails while any stays pending.

The config is validated as every command validates it (problems name the file, table and key).
"""

from __future__ import annotations

import argparse

from btlive.errors import CommandError


def register(subparsers) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML config (default: $BTLIVE_CONFIG or btlive.toml)")
    common.add_argument("--outbox", help="outbox SQLAlchemy URL (default: from the config)")

    test = subparsers.add_parser("test", parents=[common],
                                 help="send a test alert through every configured channel")
    test.add_argument("--level", choices=("warning", "critical"), default="warning")
    test.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    test.set_defaults(func=_test)

    pending = subparsers.add_parser("pending", parents=[common],
                                    help="list alert deliveries still pending in the outbox")
    pending.set_defaults(func=_pending)

    flush = subparsers.add_parser("flush", parents=[common],
                                  help="send the pending alert deliveries now; fails if any remain")
    flush.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    flush.set_defaults(func=_flush)


def _setup(args):
    """(config, its file name, the alerts table, the channels): the file and the environment
    validated alike by every command, one line per problem."""
    from btlive.alerts.config import parse, resolve_channels
    from btlive.config import load_run_config

    config, path = load_run_config(args.config)
    source = str(path) if path else "btlive.toml (none found)"
    alerts = parse(config.alerts, source)
    return config, source, alerts, resolve_channels(alerts, source)


def _outbox(args, config):
    from btlive.alerts.config import outbox_url
    from btlive.alerts.outbox import Outbox

    return Outbox(args.outbox or outbox_url(config))


def _test(args) -> int:
    from datetime import UTC, datetime

    from btlive.alerts.dispatcher import Dispatcher
    from btlive.alerts.outbox import DONE, TEST_STRATEGY
    from btlive.alerts.state import AlertMachine, Rule

    config, source, alerts, channels = _setup(args)
    if not channels:
        raise CommandError(
            f"no email or SMS channel is configured in {source} or the environment, so "
            "alerts would only be logged: add [alerts.email] or [alerts.sms] (see docs/risk.md)")
    outbox = _outbox(args, config)
    try:
        dispatcher = Dispatcher(channels, outbox=outbox, routes=alerts.routes,
                                fallback=alerts.fallback, retry=alerts.retry.backoff(),
                                namespace=alerts.namespace, sweep=False)
        machine = AlertMachine([Rule(args.level, 1.0, repeat_interval=None)],
                               strategy=TEST_STRATEGY, metric="test",
                               namespace=alerts.namespace or "btlive")
        [event] = machine.update(1.0, datetime.now(UTC),
                                 {"note": "test alert from `btlive alerts test`"})
        before = {row["alert_id"] for row in outbox.alerts()}
        dispatcher.submit(event)
        done = dispatcher.flush(args.timeout)
        dispatcher.close(0.5)
        new = [row for row in outbox.alerts() if row["alert_id"] not in before]
        ok = done and bool(new)
        for row in new:
            for attempt in outbox.attempts(row["alert_id"]):
                if attempt["channel"] == DONE:
                    continue
                print(f"{attempt['channel']:<8} attempt {attempt['attempt']}: "
                      f"{attempt['outcome']}{' - ' + attempt['error'] if attempt['error'] else ''}")
                if attempt["final"] and attempt["outcome"] != "sent":
                    ok = False
        cancelled = outbox.cancel([row["alert_id"] for row in new], "the test command ended")
        if cancelled:
            ok = False
            print(f"not delivered within {args.timeout:g}s: {cancelled} test deliveries cancelled "
                  "(a test alert is never sent later)")
    finally:
        outbox.close()
    return 0 if ok else 1


def _pending(args) -> int:
    from btlive import sql
    from btlive.alerts.config import outbox_url

    config = _setup(args)[0]
    url = args.outbox or outbox_url(config)
    try:
        sql.open_existing(url, "alerts outbox").dispose()
    except sql.DatabaseMissing:  # only looking: create nothing
        print(f"0 pending deliveries ({sql.redact_url(url)} does not exist yet)")
        return 0
    outbox = _outbox(args, config)
    try:
        rows = outbox.pending()
        for item in rows:
            print(f"{item.message.alert_id}  {item.channel:<8} attempts={item.attempts}  "
                  f"{item.message.kind:<8} {item.message.dedup_key}")
        print(f"{len(rows)} pending deliveries in {outbox.url}")
    finally:
        outbox.close()
    return 0


def _flush(args) -> int:
    from btlive.alerts.dispatcher import Dispatcher

    config, source, alerts, channels = _setup(args)
    outbox = _outbox(args, config)
    try:
        dispatcher = Dispatcher(channels, outbox=outbox, routes=alerts.routes,
                                fallback=alerts.fallback, retry=alerts.retry.backoff(),
                                namespace=alerts.namespace)
        dispatcher.flush(args.timeout)
        dispatcher.close(0.5)
        left = outbox.pending()  # what `pending` lists: the same count, whatever the reason
        for item in left:
            if item.channel not in dispatcher.channels:
                print(f"{item.message.alert_id} is routed to channel {item.channel!r}, which is "
                      f"not configured in {source}: it stays pending")
        print(f"{len(left)} deliveries still pending in {outbox.url}")
    finally:
        outbox.close()
    return 0 if not left else 1
