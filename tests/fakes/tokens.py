"""Tokens, a documented approximation (no tokenizer): a text is ceil(UTF-8 bytes / 4) tokens.

  OpenAI prompt_tokens = tokens of the stream `<|role|>content<|end|>` per message (so ~4 per message), with
  `tools`/`response_format` (as JSON) in front, plus 3 for priming the reply.
  Anthropic input = sum over content blocks (system first) of the block's tokens, plus 4 per message.
  Completion tokens = tokens of the answer text. Reasoning models add reasoning tokens, deterministic per
  prompt and effort (default medium): minimal 0-64, low 192-320, medium 768-1280, high 2304-3840. They count
  in `completion_tokens` and `completion_tokens_details.reasoning_tokens` and against
  `max_completion_tokens`: if the budget runs out while reasoning, the answer is empty with finish_reason
  "length"; if it runs out during the answer, the answer is cut (also "length"; Anthropic "max_tokens").

Also the text of a request (`prompt_of`), which the answers, the fault rules and the log key on.
"""

from __future__ import annotations

import hashlib
from typing import Any

MSG_TOKENS = 4  # per message (role and delimiters)
REPLY_TOKENS = 3  # OpenAI: priming the assistant's reply
CACHE_STEP = 128  # OpenAI caches in 128-token steps
CACHE_LOOKBACK = 20  # Anthropic checks this many block boundaries before a marker
REASONING = {
    "none": (0, 0),
    "minimal": (0, 64),
    "low": (192, 320),
    "medium": (768, 1280),
    "high": (2304, 3840),
}
TTL = {"5m": 300.0, "1h": 3600.0}


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def count_tokens(text: str) -> int:
    """ceil(UTF-8 bytes / 4): the approximation every count here uses."""
    return (len(utf8(text)) + 3) // 4


def reasoning_tokens(prompt: str, effort: str) -> int:
    lo, hi = REASONING[effort]
    h = int(hashlib.sha1(utf8(prompt + "\x00" + effort)).hexdigest()[:8], 16)
    return lo + h % (hi - lo + 1)


def cut(text: str, budget: int) -> str:
    """The longest prefix of `text` within `budget` tokens."""
    cut = text[: max(0, budget) * 4]
    while cut and count_tokens(cut) > budget:
        cut = cut[:-1]
    return cut


def text_of(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return "" if content is None else str(content)


def prompt_of(body: dict) -> str:
    """All the text of a request (system + messages), as one string."""
    parts = []
    if isinstance(body.get("system"), str):
        parts.append(body["system"])
    elif isinstance(body.get("system"), list):
        parts.append(text_of(body["system"]))
    msgs = body.get("messages")
    for m in msgs if isinstance(msgs, list) else []:
        parts.append(text_of(m.get("content")) if isinstance(m, dict) else str(m))
    return "\n".join(parts)
