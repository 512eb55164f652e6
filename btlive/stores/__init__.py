"""Stores: IBStore (ib_async) and ThetaStore (Theta Terminal REST/WebSocket, thetadata gRPC)."""
