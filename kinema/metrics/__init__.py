"""Metrics the field reports: FVD / KVD (I3D), Inception Score (C3D), frame FID (Inception-v3)."""
