"""A Theta Terminal simulator: v3 REST, the streaming WebSocket and the MDDS gRPC service."""

from btlive.sim.theta.server import ThetaSimulator

__all__ = ["ThetaSimulator"]
