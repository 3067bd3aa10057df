"""Loopback stand-ins for the OpenAI, Anthropic and Gemini HTTP APIs, written from the providers' documentation.

Used by the tests (in a background thread: `with FakeLLMServer(latency=0.05) as srv: srv.openai_url`) and by
the benchmarks (as a separate process: `python tests/fake_llm_server.py --latency 0.1 [--rpm N --tpm N]`,
which prints `READY <url>` and is steered over HTTP at /_control/*).

It behaves like the real services where clients meet them first (`strict=True`, the default; `--lenient`
turns the model and parameter rules off). One class, `FakeLLMServer`, composed of one mixin per concern:

  tokens.py         the token approximation (ceil(UTF-8 bytes / 4)), reasoning tokens, a request's text
  models.py         model rules: the model registry, what each API refuses (`ModelRules`, `Refusal`)
  faults.py         the fault plan, fault selection, the answer text, batch-line outcomes (`Faults`)
  accounting.py     prompt-cache entries, the bill, counters, rate-limit buckets and headers (`Accounting`)
  openai_api.py     chat completions, prompt caching, files and the Batch API (`OpenAIAPI`)
  anthropic_api.py  messages, cache_control, Message Batches (`AnthropicAPI`)
  gemini_api.py     generateContent, implicit caching, thinking, Batch Mode, the Files API (`GeminiAPI`), under
                    `/gemini` (`srv.gemini_url`, what GOOGLE_GEMINI_BASE_URL points the google-genai SDK at)
  server.py         the server wiring: state, the online request path, routes, control, start/stop, `main`

Each module's docstring holds the part of the behaviour it implements.
"""

from .accounting import Bucket, go_duration
from .faults import FaultPlan, default_label
from .models import MODELS, Model, Refusal
from .server import FakeLLMServer, main
from .tokens import count_tokens, prompt_of, reasoning_tokens

__all__ = [
    "MODELS",
    "Bucket",
    "FakeLLMServer",
    "FaultPlan",
    "Model",
    "Refusal",
    "count_tokens",
    "default_label",
    "go_duration",
    "main",
    "prompt_of",
    "reasoning_tokens",
]
