"""Brokers: IBBroker."""
