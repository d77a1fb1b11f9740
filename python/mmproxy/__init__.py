"""mmproxy: a high-performance multi-model LLM gateway."""

__version__ = "0.1.0"
