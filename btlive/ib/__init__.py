"""Interactive Brokers through ib_async: IBStore, IBData, IBBroker.

Importing the package registers the feed and broker with the store
(``IBStore.DataCls``/``BrokerCls``), so ``IBStore().getdata()`` works whichever
module was imported first.
"""

from btlive.ib.broker import IBBroker
from btlive.ib.feed import IBData
from btlive.ib.store import IBStore

__all__ = ["IBBroker", "IBData", "IBStore"]
