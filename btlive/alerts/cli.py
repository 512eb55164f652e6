"""``btlive alerts ...``: check the alert channels and the outbox without running a strategy.

- ``test``: send one test alert through every configured channel and report each outcome;
- ``pending``: list the deliveries the outbox still owes;
- ``flush``: send them now (what the next start would do) and exit.
"""

from __future__ import annotations

import argparse


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
                                  help="send the pending alert deliveries now")
    flush.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    flush.set_defaults(func=_flush)


def _setup(args):
    from btlive.alerts.config import outbox_url
    from btlive.alerts.outbox import Outbox
    from btlive.config import load_config

    config = load_config(args.config)
    return config, Outbox(args.outbox or outbox_url(config))


def _test(args) -> int:
    from datetime import UTC, datetime

    from btlive.alerts.config import dispatcher_from_config
    from btlive.alerts.outbox import DONE
    from btlive.alerts.state import AlertMachine, Rule

    config, outbox = _setup(args)
    try:
        dispatcher = dispatcher_from_config(config, outbox=outbox)
        namespace = dispatcher.namespace or "btlive"
        machine = AlertMachine([Rule(args.level, 1.0, repeat_interval=None)],
                               strategy="btlive-test", metric="test", namespace=namespace)
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
        if not done:
            print(f"not finished after {args.timeout:g}s; the rest stays pending in the outbox")
    finally:
        outbox.close()
    return 0 if ok else 1


def _pending(args) -> int:
    _, outbox = _setup(args)
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
    from btlive.alerts.config import dispatcher_from_config

    config, outbox = _setup(args)
    try:
        dispatcher = dispatcher_from_config(config, outbox=outbox)
        dispatcher.flush(args.timeout)
        left = dispatcher.close(0.5)
        print(f"{left} deliveries still pending in {outbox.url}")
    finally:
        outbox.close()
    return 0 if left == 0 else 1
