"""Commented example configs written by ``btlive config init`` (each is tested to validate)."""

SMA = '''\
# btlive.toml: SmaCross on 5-second bars of AAPL. Reference: docs/config.md
#
#   btlive run strategies.sma_cross:SmaCross --mode backtest
#       bars from ArcticDB (bars/5s/AAPL; an empty store gets synthetic sample bars)
#   btlive run strategies.sma_cross:SmaCross --mode paper --sim --stop-after 20
#       the bundled TWS simulator, IBBroker, warm-up from the simulator's history
#
# Secrets (IB account, SMTP password, ...) come from the environment, never from this file.

[strategy]
class = "strategies.sma_cross:SmaCross"
params = { fast = 10, slow = 30, stake = 10 }

[[data]]
name = "AAPL"
source = "ib"                     # paper/live stream from IB; a backtest reads its recording
contract = "AAPL-STK-SMART-USD"
timeframe = "seconds"             # 5-second bars: IB's real-time bars
compression = 5

[broker]
cash = 100000.0                   # a local (BackBroker) run's starting cash

[broker.commission]               # IB fixed pricing for local runs
per_share = 0.005
min_per_order = 1.0
max_pct = 1.0

[broker.paper]
broker = "ib"                     # or "local": BackBroker on live data, no IB account needed
port = 7497                       # TWS paper; IB Gateway paper is 4002

[broker.live]
port = 7496                       # TWS live (4001: IB Gateway); needs --mode live --live

[risk]                            # pre-trade checks in every mode (live refuses to start without)
max_order_size = 100
max_order_notional = 50000
max_position = 100
max_daily_loss = 2000
price_band_pct = 5
max_orders_per_minute = 30

[cvar]
window = 250
confidence = 0.975

[record]
enabled = false                   # paper/live: record the run's own feeds into ArcticDB
uri = "lmdb://./arctic_data"

[sim.tws]                         # what --sim starts
tick_interval = 0.25
always_open = true                # trade at any hour, weekends too (a real TWS follows market hours)
'''

STRANGLE = '''\
# btlive.toml: ShortStrangle on SPY and QQQ options from ThetaData, strikes picked from the
# option chain during the run (docs/options.md). Reference: docs/config.md
#
#   btlive run --sim                  backtest Thanksgiving week 2024 (a holiday, an early
#                                     close) on the bundled Theta Terminal simulator: picks,
#                                     manages and rolls both strangles
#   btlive run --mode paper --sim     the same strategy on the simulator's live data (local
#                                     broker); the market's hours apply (see [sim.theta])
# Without --sim the legs read the Theta Terminal at [theta] rest_url / ws_url.

[strategy]
class = "strategies.strangle:ShortStrangle"
params = { size = 1, dte = 2, entry_delta = 0.20, entry_net_delta = 0.05, take_profit = 0.3, stop_loss = 0.5 }

[[data]]                          # one strangle per underlying: feeds SPY_call and SPY_put
name = "SPY"
source = "theta"
symbol = "SPY"                    # the underlying; contracts are picked by the strategy
legs = ["call", "put"]
timeframe = "minutes"             # leg bars: 5 minutes
compression = 5

[[data]]
name = "QQQ"
source = "theta"
symbol = "QQQ"
legs = ["call", "put"]
timeframe = "minutes"
compression = 5

[options]
greeks = "all"                    # the Terminal's greeks (pro tier; "first_order" otherwise)
strike_range = 20                 # strikes each side of the money per expiration
spread_fraction = 1.0             # sell at the bid, buy at the ask

[backtest]
from = 2024-11-25                 # --from / --to win
to = 2024-11-30

[theta]
rest_url = "http://127.0.0.1:25503"
ws_url = "ws://127.0.0.1:25520/v1/events"
# cache_uri = "lmdb://./theta_cache"   # keep downloaded history in ArcticDB

[broker]
cash = 100000.0

[broker.paper]
broker = "local"                  # ThetaData has no broker: paper fills on its quotes

[broker.commission]
per_contract = 0.65               # IB options, per contract
min_per_order = 1.0

[risk]
max_order_size = 10
max_position = 10
max_daily_loss = 5000

[cvar]
window = 250

[sim.theta]                       # what --sim starts
# always_open = true              # paper on a weekend: trade at any hour (the real Terminal
                                  # follows NYSE; a backtest then has 24-hour sessions too)
'''

IBTEST = SMA.replace(
    "# btlive.toml: SmaCross on 5-second bars of AAPL. Reference: docs/config.md",
    "# btlive.toml: the IB test strategy (backtrader's ibtest.py) on 5-second bars of AAPL: it\n"
    "# prints every bar and notification, buys `stake` once live and sells it `holdbars` bars\n"
    "# later. Reference: docs/config.md",
).replace("strategies.sma_cross:SmaCross", "strategies.ib_test:TestStrategy").replace(
    "params = { fast = 10, slow = 30, stake = 10 }",
    "params = { trade = true, stake = 10, holdbars = 3 }")

EXAMPLES = {"sma": SMA, "strangle": STRANGLE, "ibtest": IBTEST}
