"""SQL execution audit: append-only, hash-chained tables of orders, status changes, executions
and commissions, in SQLite or PostgreSQL.

Modules: ``schema`` (tables, append-only triggers), ``chain`` (hashing), ``journal`` (spill file),
``events`` (what producers enqueue), ``writer`` (the single writer thread), ``reports`` (reconciliation), ``verify``, ``cli``.
The backtrader entry point is ``btlive.analyzers.ExecutionAudit``; IB's own messages are
captured by ``btlive.ib.capture``.
"""
