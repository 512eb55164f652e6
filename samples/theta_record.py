#!/usr/bin/env python
"""Record the ThetaData stream into ArcticDB, then read it back.

    python samples/theta_record.py --sim --seconds 10
    python samples/theta_record.py --contracts my_contracts.txt --uri lmdb://./arctic_data

It runs ``btlive record theta`` (the production command) as a subprocess for ``--seconds``
(its ``--duration``) and prints what landed in each symbol.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sim", action="store_true", help="start the Theta Terminal simulator")
    p.add_argument("--rest-url", default="http://127.0.0.1:25503")
    p.add_argument("--ws-url", default="ws://127.0.0.1:25520/v1/events")
    p.add_argument("--uri", default=None, help="ArcticDB URI (default: a temporary LMDB)")
    p.add_argument("--contracts", default=None, help="contracts file (default: SPY, QQQ and "
                                                     "two SPY options near the money)")
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)

    from btlive.arctic.library import DEFAULT_LIBRARY, get_library
    from btlive.theta.chain import Chain
    from btlive.theta.store import ThetaStore

    sim = None
    if args.sim:
        from btlive.sim.theta import ThetaSimulator

        sim = ThetaSimulator(quote_ms=250, trade_ms=1000, always_open=True).start()
        args.rest_url, args.ws_url = sim.rest_url, sim.ws_url
    tmp = tempfile.mkdtemp(prefix="theta_record_")
    uri = args.uri or f"lmdb://{tmp}/arctic"
    proc = None
    try:
        contracts = args.contracts
        if contracts is None:
            store = ThetaStore(rest_url=args.rest_url, ws_url=args.ws_url)
            chain = Chain(store)
            today = time.strftime("%Y%m%d")
            exp = chain.by_dte("SPY", today, 7)
            quote = store.get("stock/snapshot/quote", {"symbol": "SPY"})
            spot = float((quote["bid"].iloc[-1] + quote["ask"].iloc[-1]) / 2)
            call = chain.by_moneyness("SPY", exp, spot, 0.0, "C")  # the strike nearest spot
            lines = ["SPY", "QQQ", f"SPY,{exp},{call.strike},C", f"SPY,{exp},{call.strike},P"]
            print(f"SPY at {spot:.2f}: recording the {exp} {call.strike:g} call and put")
            contracts = str(Path(tmp) / "contracts.txt")
            Path(contracts).write_text("\n".join(lines) + "\n")
            ThetaStore.close_all()
        cmd = [sys.executable, "-m", "btlive", "record", "theta", "--uri", uri, "--contracts",
               contracts, "--rest-url", args.rest_url, "--ws-url", args.ws_url, "--greeks",
               "--duration", str(args.seconds)]
        print("$", " ".join(cmd))
        proc = subprocess.Popen(cmd)
        try:
            proc.wait(args.seconds + 60)  # it stops itself after --duration
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        lib = get_library(uri, DEFAULT_LIBRARY)
        for sym in sorted(lib.list_symbols()):
            df = lib.read(sym).data
            print(f"{sym:45s} {len(df):6d} rows  {df.index[0]} .. {df.index[-1]}")
        return proc.returncode
    finally:
        if proc is not None and proc.poll() is None:  # it did not stop on SIGINT in time
            proc.kill()
            proc.wait()
        if sim is not None:
            sim.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
