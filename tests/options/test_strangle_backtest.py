"""ShortStrangle over several days of simulated ThetaData history: picks by DTE and delta,
rolls, enters only when every rule holds, skips a holiday and a weekend, keeps to an early
close, settles expirations, and takes its strangles up again after a restart."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from btlive.options import OptionsBroker

pytestmark = pytest.mark.slow

# Thanksgiving week 2024: Thu 28 holiday, Fri 29 early close (13:00 ET), then a weekend
START, END = dt.date(2024, 11, 25), dt.date(2024, 12, 4)


@pytest.fixture(scope="module")
def thanksgiving(store, run_strangle, tmp_path_factory):
    records = tmp_path_factory.mktemp("records") / "strangles.json"
    strat, cerebro, chain = run_strangle(store, START, END, roots=("SPY", "QQQ"), dte=2,
                                         entry_net_delta=0.02, take_profit=0.3,
                                         stop_loss=0.5, records=str(records))
    return strat, cerebro, chain, records


def _bar_days(data) -> list[dt.datetime]:
    return [data.datetime.datetime(-i) for i in range(len(data) - 1, -1, -1)]


def test_rolls_and_enters_only_when_every_rule_holds(thanksgiving):
    strat, cerebro, _, _ = thanksgiving
    assert strat.rolls >= 2, strat.events
    assert {e["root"] for e in strat.entry_log} == {"SPY", "QQQ"}  # two strangles at once
    for entry in strat.entry_log:
        slot = strat.slots[entry["root"]]
        assert strat.entry_problem(slot, entry["call"], entry["put"], entry["now"]) is None
        assert abs(entry["call"].delta + entry["put"].delta) <= 0.02
        assert entry["call"].contract.expiration >= dt.datetime.fromtimestamp(
            entry["now"] / 1e9, dt.UTC).strftime("%Y%m%d")
    assert strat.rejections["net_delta"] > 0  # it waited for the rule, then entered
    for root, slot in strat.slots.items():  # each strangle's credit from its own fills
        assert set(slot.fills) <= {f"{root}_call", f"{root}_put"}, (root, slot.fills)
        for leg in slot.legs:
            assert strat._slot_of(leg) is slot
    assert set(strat.exits) <= {"expiry", "take_profit", "stop_loss", "max_leg_delta",
                                "max_net_delta", "expiration"}
    # each re-entry picked a later cycle than the strangle it replaced
    for root in ("SPY", "QQQ"):
        exps = [e["call"].contract.expiration for e in strat.entry_log if e["root"] == root]
        assert exps == sorted(exps)


def test_holiday_weekend_and_early_close_are_skipped_with_a_message(thanksgiving):
    strat, _, chain, _ = thanksgiving
    days = {}
    for when in _bar_days(strat.datas[0]):
        days.setdefault(when.date(), []).append(when)
    assert dt.date(2024, 11, 28) not in days
    assert dt.date(2024, 11, 30) not in days and dt.date(2024, 12, 1) not in days
    assert max(days[dt.date(2024, 11, 29)]) == dt.datetime(2024, 11, 29, 18, 0)  # 13:00 ET
    assert len(days[dt.date(2024, 11, 29)]) == 42
    assert len(days[dt.date(2024, 11, 27)]) == 78  # 09:35 .. 16:00 ET
    assert "2024-11-28 is a market holiday: no bars" in chain.messages
    assert "2024-11-30 is a weekend: no bars" in chain.messages


def test_fills_at_the_bid_and_ask_with_ib_commissions(thanksgiving):
    from btlive.options.chain import ns_of
    from btlive.theta.feed import parse_dataname

    strat, cerebro, chain, _ = thanksgiving
    done = [o for o in strat.orders if o.status == o.Completed]
    assert done
    for order in done:  # sells at the bid, buys at the ask of the bar after the decision
        q = chain.quote(parse_dataname(order.info["contract"]),
                        ns_of(order.data.num2date(order.executed.dt)))
        assert order.executed.price == pytest.approx(q.bid if order.issell() else q.ask)
        assert order.executed.dt > order.created.dt
    for order in done:
        assert order.executed.comm == pytest.approx(max(0.65 * abs(order.executed.size), 1.0)
                                                    if order.executed.price >= 0.10 else
                                                    max(0.5 * abs(order.executed.size), 1.0)
                                                    if order.executed.price >= 0.05 else 1.0)


def test_records_list_the_open_strangles(thanksgiving):
    strat, _, _, records = thanksgiving
    saved = json.loads(records.read_text())
    assert saved["open"] == json.loads(json.dumps(strat.open_records()))
    assert set(saved["open"]) <= {"SPY", "QQQ"}


def test_restart_takes_up_the_open_strangles(store, run_strangle, tmp_path):
    records = tmp_path / "strangles.json"
    first, _, _ = run_strangle(store, dt.date(2024, 11, 4), dt.date(2024, 11, 4), dte=3,
                               take_profit=None, stop_loss=None, max_leg_delta=None,
                               max_net_delta=None, records=str(records))
    held = first.open_records()
    assert held["SPY"], first.events
    rec = held["SPY"]
    positions = {rec["call"]: (rec["sizes"][0], 1.0), rec["put"]: (rec["sizes"][1], 1.0)}
    broker = OptionsBroker(cash=100_000, held=positions)
    second, _, _ = run_strangle(store, dt.date(2024, 11, 5), dt.date(2024, 11, 5), dte=3,
                                broker=broker, records=str(records), take_profit=None,
                                stop_loss=None, max_leg_delta=None, max_net_delta=None)
    assert second.restored == ["SPY"], second.events
    assert second.slots["SPY"].call.contract.instrument == rec["call"]
    assert second.entries == 0  # it managed what it had, it did not open another
    assert not any("without a record" in e for e in second.events)
    # without the positions at the broker the record is dropped, and it trades anew
    third, _, _ = run_strangle(store, dt.date(2024, 11, 5), dt.date(2024, 11, 5), dte=3,
                               records=str(records),
                               broker=OptionsBroker(cash=100_000,
                                                    held={"SPY_20241108_C600": (-2, 0.5)}))
    assert third.restored == []
    assert any("holds no position" in e for e in third.events), third.events
    assert any("-2 SPY_20241108_C600 without a record" in e for e in third.events)


def test_unreadable_records_start_flat_with_a_message(store, run_strangle, tmp_path):
    records = tmp_path / "strangles.json"
    records.write_text("{not json")
    strat, _, _ = run_strangle(store, dt.date(2024, 11, 4), dt.date(2024, 11, 4), dte=3,
                               records=str(records))
    assert any("unreadable" in e and "starting flat" in e for e in strat.events), strat.events
    assert strat.entries >= 1
    assert set(json.loads(records.read_text())["open"]) <= {"SPY"}  # rewritten, valid again


def test_a_restored_strangle_missing_a_leg_is_closed(store, run_strangle, tmp_path):
    records = tmp_path / "strangles.json"
    call, put = "SPY_20241108_C560", "SPY_20241108_P530"
    records.write_text(json.dumps({"version": 1, "open": {"SPY": {
        "call": call, "put": put, "sizes": [-1, -1], "credit": 3.0,
        "opened": "2024-11-04T15:00:00+00:00"}}}))
    broker = OptionsBroker(cash=100_000, held={call: (-1, 1.5)})  # the put is gone
    strat, _, _ = run_strangle(store, dt.date(2024, 11, 5), dt.date(2024, 11, 5), dte=3,
                               broker=broker, records=str(records), reenter=False)
    assert strat.restored == ["SPY"]
    assert strat.exits[0] == "partial", strat.events
    assert not any(strat.getposition(d).size for d in strat.datas)
    assert json.loads(records.read_text())["open"] == {}
