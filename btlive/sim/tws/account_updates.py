"""Accounts: account values and portfolio on TWS's cadence, positions, PnL, summaries."""

from __future__ import annotations

import asyncio
from datetime import datetime

from . import messages as M
from .accounts import Account
from .state import Handlers, Session, safe_int

HANDLERS = Handlers()


class AccountsPart:
    """Account subscriptions and the pushes that feed them."""

    async def _account_loop(self) -> None:
        """Account values and the whole portfolio on TWS's timer (3 minutes by default)."""
        while True:
            await asyncio.sleep(self.account_refresh)
            for acct in self.accounts.values():
                self._push_account(acct)

    def _push_dirty(self) -> None:
        self._push_scheduled = False
        dirty, self._dirty = self._dirty, {}
        for code, con_ids in dirty.items():
            self._push_account(self.accounts[code], con_ids)

    def _marks(self) -> dict[int, float]:
        out = {}
        for acct in self.accounts.values():
            for cid in acct.positions:
                q = self.market.quotes.get(cid)
                if q is not None:
                    out[cid] = q.mid or q.last
        return out

    def _send_account(self, s: Session, acct: Account, marks: dict[int, float],
                      values: list, con_ids: set[int] | None = None) -> None:
        """Account values (may be none), updatePortfolio (for ``con_ids``, or all) and the
        account time."""
        for key, val, cur in values:
            s.send(M.update_account_value(key, val, cur, acct.code))
        for inst, qty, px, val, avg, un, re_ in acct.portfolio(marks):
            if con_ids is None or inst.con_id in con_ids:
                s.send(M.update_portfolio(inst, qty, px, val, avg, un, re_, acct.code))
        s.send([8, 1, datetime.now(self.tz).strftime("%H:%M")])

    @staticmethod
    def _send_multi(s: Session, rid: int, acct: Account, values: list) -> None:
        for key, val, cur in values:
            s.send([73, 1, rid, acct.code, "", key, val, cur])

    def _push_account(self, acct: Account, con_ids: set[int] | None = None) -> None:
        """Portfolio and PnL of ``acct`` to the sessions subscribed to it; with ``con_ids``
        None (the timer) the account values too, else (a position changed) only the
        portfolio rows of ``con_ids``: as TWS, cash and value wait for the timer."""
        marks = self._marks()
        values = acct.values(marks) if con_ids is None else []
        for s in list(self.sessions.values()):
            if s.account_updates == acct.code:
                self._send_account(s, acct, marks, values, con_ids)
            for rid, code in s.pnl.items():
                if code == acct.code:
                    s.send(self._pnl_msg(acct, rid, marks))
            for rid, (code, con_id) in s.pnl_single.items():
                if code == acct.code and (con_ids is None or con_id in con_ids):
                    s.send(self._pnl_single_msg(acct, rid, con_id, marks))
            for rid, code in s.acct_multi.items():
                if code in ("", acct.code):
                    self._send_multi(s, rid, acct, values)

    @staticmethod
    def _pnl_msg(acct: Account, rid: int, marks: dict[int, float]) -> list:
        unreal = sum(row[5] for row in acct.portfolio(marks))
        return M.pnl(rid, unreal + acct.realized, unreal, acct.realized)

    @staticmethod
    def _pnl_single_msg(acct: Account, rid: int, con_id: int, marks: dict[int, float]) -> list:
        for inst, qty, _px, value, _avg, unreal, real in acct.portfolio(marks):
            if inst.con_id == con_id:
                return M.pnl_single(rid, qty, unreal + real, unreal, real, value)
        return M.pnl_single(rid, 0, 0.0, 0.0, 0.0, 0.0)

    @HANDLERS(M.REQ_PNL)
    def _req_pnl(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 1)
        rid, code = r.int(), r.str() or self.default_account
        acct = self.accounts.get(code)
        if acct is None:
            s.send(M.error(s.version, rid, 321, f"Error validating request: account {code!r} "
                                                "is not managed by this login"))
            return
        s.pnl[rid] = code
        s.send(self._pnl_msg(acct, rid, self._marks()))

    @HANDLERS(M.REQ_PNL_SINGLE)
    def _req_pnl_single(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 1)
        rid, code = r.int(), r.str() or self.default_account
        r.skip(1)  # modelCode
        con_id = r.int()
        acct = self.accounts.get(code)
        if acct is None or self.universe.get(con_id) is None:
            s.send(M.error(s.version, rid, 321, f"Error validating request: account {code!r} "
                                                f"or conId {con_id} unknown"))
            return
        s.pnl_single[rid] = (code, con_id)
        s.send(self._pnl_single_msg(acct, rid, con_id, self._marks()))

    @HANDLERS(M.CANCEL_PNL, M.CANCEL_PNL_SINGLE)
    def _cancel_pnl(self, s: Session, f: list[str]) -> None:
        rid = safe_int(f[1])
        s.pnl.pop(rid, None)
        s.pnl_single.pop(rid, None)

    @HANDLERS(M.REQ_ACCT_UPDATES)
    def _account_updates(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 2)
        subscribe, code = r.bool(), r.str() or self.default_account
        s.account_updates = ""
        if not subscribe:
            return
        acct = self.accounts.get(code)
        if acct is None:
            s.send(M.error(s.version, -1, 321, f"Error validating request: account {code!r} "
                                               "is not managed by this login"))
            return
        s.account_updates = code
        marks = self._marks()
        self._send_account(s, acct, marks, acct.values(marks))
        s.send([54, 1, acct.code])

    @HANDLERS(M.REQ_ACCOUNT_UPDATES_MULTI)
    def _account_multi(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 2)
        rid, code = r.int(), r.str()
        code = code if code in self.accounts else ""  # unknown or empty: every account
        marks = self._marks()
        for acct in self.accounts.values():
            if code in ("", acct.code):
                self._send_multi(s, rid, acct, acct.values(marks))
        s.acct_multi[rid] = code
        s.send([74, 1, rid])

    @HANDLERS(M.CANCEL_ACCOUNT_UPDATES_MULTI)
    def _cancel_account_multi(self, s: Session, f: list[str]) -> None:
        s.acct_multi.pop(safe_int(f[2]), None)

    @HANDLERS(M.REQ_ACCOUNT_SUMMARY)
    def _account_summary(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 2)
        rid, _group, tags = r.int(), r.str(), r.str()
        wanted = {t.strip() for t in tags.split(",") if t.strip()}
        marks = self._marks()
        for acct in self.accounts.values():
            for key, val, cur in acct.values(marks):
                if cur == "BASE":
                    continue
                if not wanted or key in wanted or "$LEDGER" in wanted or \
                        "$LEDGER:ALL" in wanted:
                    s.send([63, 1, rid, acct.code, key, val, cur])
        s.send([64, 1, rid])

    @HANDLERS(M.REQ_POSITIONS)
    def _positions(self, s: Session, f: list[str]) -> None:
        s.positions = True
        for acct in self.accounts.values():
            for pos in acct.positions.values():
                s.send(M.position(acct.code, pos.inst, pos.qty, pos.avg_cost))
        s.send([62, 1])

    @HANDLERS(M.CANCEL_POSITIONS)
    def _cancel_positions(self, s: Session, f: list[str]) -> None:
        s.positions = False
