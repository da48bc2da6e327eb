"""Feature networks of the metrics (I3D, C3D, Inception-v3), weights loaded from user files."""
