"""bt-search: text-to-image search over your own folders with BridgeTower."""

__version__ = "0.1.0"
