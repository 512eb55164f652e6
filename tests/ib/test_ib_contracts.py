"""Every dataname form backtrader's ibdata documents, and the errors for bad ones."""

from __future__ import annotations

import pytest
from ib_async import Contract

from btlive.ib.contracts import (
    ContractDefaults,
    ContractSpecError,
    contract_label,
    parse_contract,
)


def c(spec, **defaults):
    con = parse_contract(spec, ContractDefaults(**defaults) if defaults else None)
    return (con.secType, con.symbol, con.exchange, con.currency, con.lastTradeDateOrContractMonth,
            con.strike, con.right, con.multiplier)


@pytest.mark.parametrize("spec, expected", [
    ("AAPL", ("STK", "AAPL", "SMART", "", "", 0.0, "", "")),
    ("AAPL-STK", ("STK", "AAPL", "SMART", "", "", 0.0, "", "")),
    ("AAPL-STK-ISLAND", ("STK", "AAPL", "ISLAND", "", "", 0.0, "", "")),
    ("AAPL-STK-SMART-USD", ("STK", "AAPL", "SMART", "USD", "", 0.0, "", "")),
    ("IBUS30-CFD", ("CFD", "IBUS30", "SMART", "", "", 0.0, "", "")),
    ("IBUS30-CFD-SMART", ("CFD", "IBUS30", "SMART", "", "", 0.0, "", "")),
    ("IBUS30-CFD-SMART-USD", ("CFD", "IBUS30", "SMART", "USD", "", 0.0, "", "")),
    ("SPX-IND-CBOE", ("IND", "SPX", "CBOE", "", "", 0.0, "", "")),
    ("DAX-IND-EUREX-EUR", ("IND", "DAX", "EUREX", "EUR", "", 0.0, "", "")),
    ("ES-202612-CME", ("FUT", "ES", "CME", "", "202612", 0.0, "", "")),
    ("ES-202612-CME-USD", ("FUT", "ES", "CME", "USD", "202612", 0.0, "", "")),
    ("ES-202612-CME-USD-50", ("FUT", "ES", "CME", "USD", "202612", 0.0, "", "50")),
    ("ES-FUT-CME-USD-202612-50", ("FUT", "ES", "CME", "USD", "202612", 0.0, "", "50")),
    ("ES-FUT-CME-USD-202612", ("FUT", "ES", "CME", "USD", "202612", 0.0, "", "")),
    ("ES-202612-CME-USD-5000-C", ("FOP", "ES", "CME", "USD", "202612", 5000.0, "C", "")),
    ("ES-202612-CME-USD-5000-P-50", ("FOP", "ES", "CME", "USD", "202612", 5000.0, "P", "50")),
    ("ES-FOP-CME-USD-202612-5000-CALL", ("FOP", "ES", "CME", "USD", "202612", 5000.0, "C", "")),
    ("ES-FOP-CME-USD-202612-5000-C-50", ("FOP", "ES", "CME", "USD", "202612", 5000.0, "C", "50")),
    ("EUR.USD-CASH-IDEALPRO", ("CASH", "EUR", "IDEALPRO", "USD", "", 0.0, "", "")),
    ("EUR.JPY-CASH", ("CASH", "EUR", "IDEALPRO", "JPY", "", 0.0, "", "")),
    ("SPY-20261218-SMART-USD-450-C", ("OPT", "SPY", "SMART", "USD", "20261218", 450.0, "C", "")),
    ("SPY-20261218-SMART-USD-450.5-PUT-100", ("OPT", "SPY", "SMART", "USD", "20261218", 450.5, "P", "100")),
    ("SPY-OPT-SMART-USD-20261218-450-C", ("OPT", "SPY", "SMART", "USD", "20261218", 450.0, "C", "")),
    ("SPY-OPT-SMART-USD-20261218-450-C-100", ("OPT", "SPY", "SMART", "USD", "20261218", 450.0, "C", "100")),
])
def test_every_backtrader_form(spec, expected):
    assert c(spec) == expected


def test_defaults_apply_to_missing_tokens():
    assert c("AAPL", currency="USD", exchange="ISLAND") == ("STK", "AAPL", "ISLAND", "USD", "", 0.0, "", "")
    assert c("IBUS30", sectype="CFD")[0] == "CFD"


@pytest.mark.parametrize("spec, words", [
    ("", "non-empty"),
    ("AAPL--SMART", "empty token"),
    ("AAPL-XYZ", "security type 'XYZ'"),
    ("ES-2026-CME", "expiry '2026' must be YYYYMM"),
    ("SPX-IND", "index needs its exchange"),
    ("EURUSD-CASH-IDEALPRO", "CUR1.CUR2"),
    ("SPY-20261218-SMART-USD-abc-C", "strike 'abc'"),
    ("SPY-20261218-SMART-USD-450-X", "right 'X'"),
    ("SPY-20261218-SMART-USD", "STRIKE-RIGHT"),
    ("ES-FUT-CME-USD", "expiry"),
    ("ES-202612-CME-USD-fifty", "multiplier 'fifty'"),
    ("AAPL-STK-SMART-USD-EXTRA", "trailing tokens 'EXTRA'"),
])
def test_bad_strings_name_the_problem(spec, words):
    with pytest.raises(ContractSpecError) as err:
        parse_contract(spec)
    assert words in str(err.value)


def test_labels():
    assert contract_label(parse_contract("EUR.USD-CASH-IDEALPRO")) == "EUR.USD"
    assert contract_label(parse_contract("AAPL")) == "AAPL"
    assert contract_label(parse_contract("ES-202612-CME")) == "ES-202612"
    assert contract_label(Contract(secType="OPT", symbol="SPY", localSymbol="SPY   261218C00450000")) \
        == "SPY261218C00450000"
