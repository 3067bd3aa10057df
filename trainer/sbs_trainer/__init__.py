"""sbs_trainer: a lean Distilling Step-by-Step trainer for sbs-data exports (torch + transformers + pyarrow)."""

__version__ = "0.1.0"
