"""Data feeds: IBData, ThetaData, ArcticData."""
