"""Simulators that the real client libraries connect to: ``sim.tws`` and ``sim.theta``."""
