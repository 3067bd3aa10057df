"""A loopback stand-in for the OpenAI chat-completions and Anthropic messages HTTP APIs, with fault injection.

The stand-in lives in the `fakes` package (tests/fakes/: one module per concern, see its docstring); this
module keeps the old import path and the command line the benchmarks start in a separate process:
`python tests/fake_llm_server.py --latency 0.1 [--rpm N --tpm N]` prints `READY <url>` and is steered over
HTTP at /_control/*.
"""

from __future__ import annotations

import sys

import fakes
from fakes import *  # noqa: F403 - the old import path serves every name the package exports

__all__ = fakes.__all__

if __name__ == "__main__":
    sys.exit(fakes.main())
