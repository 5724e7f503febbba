"""vau-annotate: reasoning datasets for video anomaly understanding, from raw videos and labels."""

__version__ = "0.1.0"
