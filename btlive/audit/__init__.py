"""SQL execution audit: append-only, hash-chained tables of orders, status changes, executions
and commissions, in SQLite or PostgreSQL.

Modules: ``schema`` (tables), ``triggers`` (append-only enforcement), ``chain`` (hashing),
``events`` (what producers enqueue), ``writer`` (the single writer thread), ``reports`` (reconciliation), ``verify``, ``cli``.
The backtrader entry point is ``btlive.analyzers.ExecutionAudit``; IB's own messages are
captured by ``btlive.ib.capture``.
"""
