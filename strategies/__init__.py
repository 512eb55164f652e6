"""Strategies that run unchanged in backtest, paper and live."""
