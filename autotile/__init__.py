"""autotile: a kernel auto-tuning compiler."""

__version__ = "0.1.0"
