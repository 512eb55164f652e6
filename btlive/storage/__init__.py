"""ArcticDB storage: the recorder, symbol naming, maintenance helpers."""
