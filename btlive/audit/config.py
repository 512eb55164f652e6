"""The ``[audit]`` table of ``btlive.toml`` (a pydantic model; the root config imports it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class AuditConfig(BaseModel):
    """``[audit]``: the SQL execution audit (``ExecutionAudit``) of a run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    db: str = Field("sqlite:///btlive_audit.db",
                    description="SQLAlchemy URL of the audit database (sqlite or postgresql)")
    journal: str | None = Field(None, description="directory of the spill journal (default: next "
                                "to a SQLite file, else $XDG_STATE_HOME/btlive/audit-journal)")
    queue_size: int = Field(50_000, ge=1, description="events held in memory before the "
                            "strategy waits (backtest) or events spill to the journal (live)")
    overflow: Literal["block", "journal"] | None = Field(
        None, description="when the database falls behind: block or journal (default: block in "
                          "backtests, journal in live runs)")
    close_timeout: float = Field(30.0, gt=0, description="seconds without progress after which "
                                 "the end of a run stops waiting and keeps the rest in the journal")

    def analyzer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``btlive.analyzers.ExecutionAudit`` for this table."""
        writer: dict[str, Any] = {"queue_size": self.queue_size}
        if self.journal:
            writer["journal_dir"] = self.journal
        return {"db": self.db, "overflow": self.overflow, "close_timeout": self.close_timeout,
                "writer": writer}
