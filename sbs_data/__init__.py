"""sbs-data: teacher LLM -> Distilling Step-by-Step training data."""

from pathlib import Path

__version__ = "0.1.0"

#: Repository resources (schemas, recipes) live beside the package in an editable/source install.
ROOT = Path(__file__).resolve().parent.parent
SCHEMAS_DIR = ROOT / "schemas"
RECIPES_DIR = ROOT / "recipes"


class SbsError(Exception):
    """An error the user caused or can fix; the CLI prints it without a traceback."""
