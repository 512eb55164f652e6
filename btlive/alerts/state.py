"""The alert state machine: one per (strategy, metric), one state per level.

Each level (warning, critical) moves OK -> PENDING (breached, waiting ``for_bars``) -> FIRING
(notify) -> RESOLVED (below ``clear`` for ``clear_bars``; notify) -> OK. Hysteresis: a level fires
at ``value >= threshold`` and only clears at ``value < clear`` (clear < threshold), so a value
hovering at the limit cannot flap. While FIRING, a reminder goes out every ``repeat_interval``,
measured by ``clock`` when one is given (wall time: live runs) and by bar time otherwise. Backtests
leave repeats off (one notification per episode); see ``analyzers.CVaR``.

A firing critical level inhibits (silences) the warning level's notifications, as Alertmanager's
``inhibit_rules`` do; a warning that fired while inhibited is announced once the inhibition lifts,
and its resolve is only sent if its firing was. The dedup key
``"{namespace}:{strategy}:{metric}:{level}"`` contains nothing run-specific, so it is stable
across restarts. The machine is pure: ``update(value, at)`` returns the events to send.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

LEVELS = ("warning", "critical")  # ascending severity


class State(StrEnum):
    OK = "ok"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class Kind(StrEnum):
    FIRING = "firing"
    REPEAT = "repeat"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Rule:
    """When one level fires and clears. ``clear`` defaults to ``clear_ratio * threshold``."""

    level: str
    threshold: float
    clear: float | None = None
    for_bars: int = 1
    clear_bars: int = 1
    repeat_interval: timedelta | None = timedelta(hours=4)
    clear_ratio: float = 0.8

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"level={self.level!r} must be one of {LEVELS}")
        if (isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float)
                or not math.isfinite(self.threshold) or self.threshold <= 0):
            raise ValueError(f"{self.level} threshold={self.threshold!r} must be a positive number "
                             "(a loss fraction or dollars)")
        if self.clear is None:
            if not 0.0 < self.clear_ratio <= 1.0:
                raise ValueError(f"clear_ratio={self.clear_ratio!r} must be in (0, 1]")
            object.__setattr__(self, "clear", self.threshold * self.clear_ratio)
        if not isinstance(self.clear, int | float) or not self.clear <= self.threshold:
            raise ValueError(f"{self.level} clear={self.clear!r} must be <= threshold={self.threshold!r}")
        for name in ("for_bars", "clear_bars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        if self.repeat_interval is not None and self.repeat_interval <= timedelta(0):
            raise ValueError(f"repeat_interval={self.repeat_interval!r} must be positive or None")


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One notification to send: a level firing, a reminder, or a resolve."""

    dedup_key: str
    namespace: str
    strategy: str
    metric: str
    level: str
    kind: Kind
    value: float
    threshold: float
    clear: float
    at: datetime
    unit: str = "fraction"
    active_levels: tuple[str, ...] = ()
    context: dict = field(default_factory=dict)

    def format_value(self, value: float) -> str:
        if self.unit == "dollars":
            return f"${value:,.2f}"
        return f"{value * 100:.3f}%"

    @property
    def subject(self) -> str:
        what = {Kind.FIRING: "FIRING", Kind.REPEAT: "STILL FIRING", Kind.RESOLVED: "RESOLVED"}[self.kind]
        return (f"[{self.level.upper()} {what}] {self.strategy} {self.metric} "
                f"{self.format_value(self.value)}")

    @property
    def text(self) -> str:
        lines = [self.subject, "",
                 f"key:       {self.dedup_key}",
                 f"value:     {self.format_value(self.value)}",
                 f"threshold: {self.format_value(self.threshold)} (clears below "
                 f"{self.format_value(self.clear)})",
                 f"bar time:  {self.at.isoformat()}"]
        for name, value in sorted(self.context.items()):
            lines.append(f"{name + ':':<10} {value}")
        if self.kind is Kind.RESOLVED:
            lines.append("still active: " + (", ".join(self.active_levels) or "none, all clear"))
        return "\n".join(lines) + "\n"

    @property
    def short(self) -> str:
        """An SMS-sized version of the subject."""
        return f"btlive {self.subject} @ {self.at:%Y-%m-%d %H:%M}"

    def as_dict(self) -> dict:
        return {"dedup_key": self.dedup_key, "level": self.level, "kind": str(self.kind),
                "value": self.value, "threshold": self.threshold, "clear": self.clear,
                "at": self.at, "unit": self.unit, "active_levels": list(self.active_levels),
                **self.context}


@dataclass(slots=True)
class LevelState:
    state: State = State.OK
    count: int = 0
    clear_count: int = 0
    notified: bool = False
    last_notified: datetime | None = None


def dedup_key(namespace: str, strategy: str, metric: str, level: str) -> str:
    return f"{namespace}:{strategy}:{metric}:{level}"[:255]


class AlertMachine:
    """The levels of one (namespace, strategy, metric); ``update`` returns the events to send."""

    def __init__(self, rules: list[Rule] | tuple[Rule, ...], *, strategy: str, metric: str,
                 namespace: str = "btlive", unit: str = "fraction",
                 clock: Callable[[], datetime] | None = None) -> None:
        levels = [rule.level for rule in rules]
        if len(set(levels)) != len(levels):
            raise ValueError(f"duplicate alert levels in {levels!r}")
        by_level = {rule.level: rule for rule in rules}
        if "warning" in by_level and "critical" in by_level:
            if by_level["critical"].threshold < by_level["warning"].threshold:
                raise ValueError(f"critical threshold={by_level['critical'].threshold!r} is below "
                                 f"warning threshold={by_level['warning'].threshold!r}")
        # most severe first, so inhibition sees the critical state of this bar
        self.rules = sorted(rules, key=lambda rule: -LEVELS.index(rule.level))
        self.strategy, self.metric, self.namespace, self.unit = strategy, metric, namespace, unit
        self.clock = clock
        self.states = {rule.level: LevelState() for rule in self.rules}
        self.keys = {rule.level: dedup_key(namespace, strategy, metric, rule.level)
                     for rule in self.rules}
        # the configured levels that inhibit each level
        self._higher = {rule.level: [lvl for lvl in LEVELS[LEVELS.index(rule.level) + 1:]
                                     if lvl in self.states] for rule in self.rules}
        self._lowest_trigger = min((rule.threshold for rule in self.rules), default=math.inf)
        self._idle = True

    @property
    def idle(self) -> bool:
        """True when every level is OK: values below every threshold can be skipped cheaply."""
        return self._idle

    @property
    def lowest_trigger(self) -> float:
        return self._lowest_trigger

    def needs(self, value: float) -> bool:
        """Whether ``update(value, ...)`` could change anything (a fast path for the analyzer)."""
        return value >= self._lowest_trigger or not self._idle

    def resume(self, level: str, at: datetime) -> None:
        """Start ``level`` as FIRING and notified (its firing was sent before a restart)."""
        st = self.states[level]
        st.state, st.notified, st.last_notified, st.count = State.FIRING, True, at, 0
        self._idle = False

    def update(self, value: float, at: datetime, context: dict | None = None) -> list[AlertEvent]:
        if value is None or not math.isfinite(value):
            return []
        now = at if self.clock is None else self.clock()  # what repeats are measured in
        firing_before = {level for level, st in self.states.items() if st.state is State.FIRING}
        pending: list[tuple[Rule, Kind]] = []
        for rule in self.rules:
            st = self.states[rule.level]
            transition = self._step(rule, st, value)
            inhibited = any(lvl in firing_before or self.states[lvl].state is State.FIRING
                            for lvl in self._higher[rule.level])
            if transition is Kind.FIRING:
                if not inhibited:
                    pending.append((rule, Kind.FIRING))
                    st.notified, st.last_notified = True, now
            elif transition is Kind.RESOLVED:
                if st.notified and not inhibited:
                    pending.append((rule, Kind.RESOLVED))
                st.notified, st.last_notified = False, None
            elif st.state is State.FIRING and not inhibited:
                if not st.notified:
                    pending.append((rule, Kind.FIRING))
                    st.notified, st.last_notified = True, now
                elif (rule.repeat_interval is not None and st.last_notified is not None
                      and now - st.last_notified >= rule.repeat_interval):
                    pending.append((rule, Kind.REPEAT))
                    st.last_notified = now
        active = tuple(level for level in LEVELS
                       if level in self.states and self.states[level].state is State.FIRING)
        self._idle = all(st.state is State.OK for st in self.states.values())
        return [AlertEvent(dedup_key=self.keys[rule.level], namespace=self.namespace,
                           strategy=self.strategy, metric=self.metric, level=rule.level, kind=kind,
                           value=value, threshold=rule.threshold, clear=rule.clear, at=at,
                           unit=self.unit, active_levels=active, context=dict(context or {}))
                for rule, kind in pending]

    @staticmethod
    def _step(rule: Rule, st: LevelState, value: float) -> Kind | None:
        if st.state in (State.OK, State.RESOLVED, State.PENDING):
            if value >= rule.threshold:
                st.count = st.count + 1 if st.state is State.PENDING else 1
                if st.count >= rule.for_bars:
                    st.state, st.clear_count = State.FIRING, 0
                    return Kind.FIRING
                st.state = State.PENDING
            else:
                st.state, st.count = State.OK, 0
            return None
        # FIRING
        if value < rule.clear:
            st.clear_count += 1
            if st.clear_count >= rule.clear_bars:
                st.state, st.count, st.clear_count = State.RESOLVED, 0, 0
                return Kind.RESOLVED
        else:
            st.clear_count = 0
        return None
