"""origin — a streaming origin with dynamic encryption and a co-hosted licence module."""

__version__ = "0.1.0"
