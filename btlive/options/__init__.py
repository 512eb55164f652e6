"""Options strategies on backtrader: a trading calendar, a chain asked at the bar's time,
leg feeds whose contract the strategy switches when flat, and option fills and costs.

See docs/options.md for the design.
"""

from btlive.options.broker import OptionCommission, OptionsBroker
from btlive.options.calendar import MarketCalendar
from btlive.options.chain import LegQuote, OptionChain
from btlive.options.leg import OptionLeg, add_legs

__all__ = ["LegQuote", "MarketCalendar", "OptionChain", "OptionCommission", "OptionLeg",
           "OptionsBroker", "add_legs"]
