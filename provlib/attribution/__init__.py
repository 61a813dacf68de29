"""Training-data attribution of suspect models (Zhang et al., 2024): key samples, distances, watermark."""
