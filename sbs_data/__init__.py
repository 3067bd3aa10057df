"""sbs-data: teacher LLM -> Distilling Step-by-Step training data."""

import logging
from pathlib import Path

__version__ = "0.1.0"

#: Warnings and notes for the user go through this logger. With no logging configured, Python's last-resort
#: handler prints warnings to stderr (as the library always did); the CLI installs a handler that prints
#: them as plain lines; tests read them with pytest's `caplog`.
log = logging.getLogger("sbs_data")

#: Repository resources (schemas, recipes) live beside the package in an editable/source install.
ROOT = Path(__file__).resolve().parent.parent
SCHEMAS_DIR = ROOT / "schemas"
RECIPES_DIR = ROOT / "recipes"


class SbsError(Exception):
    """An error the user caused or can fix; the CLI prints it without a traceback."""
