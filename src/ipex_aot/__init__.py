"""ipex-aot: per-generation ahead-of-time builds of Intel Extension for PyTorch."""

__version__ = "0.1.0"
