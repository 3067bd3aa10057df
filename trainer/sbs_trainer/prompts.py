"""How a decoder-only student sees a task: the prompt before each target, and the token that ends it.

A causal student reads one sequence per task: prompt(task, input) followed by the target and an end
token. The prompt is rendered in one of two formats:

- `chat`: the tokenizer's own chat template, with the task instruction and the input as the user turn
  and `add_generation_prompt=True`; the target is the assistant turn, ended by the template's end-of-turn
  token (`<|im_end|>` for ChatML models such as Qwen, `<|eot_id|>` for Llama 3).
- `plain`: for tokenizers without a chat template: the tokenizer's BOS token (if it has one), then
  `{instruction}{input}` and a newline; the target follows and ends with EOS.

The instruction is `predict: ` for the label and `explain: ` for the rationale, as in the paper's T5
inputs. The exact format is written to `prompt_format.json` in the run folder and next to every saved
model (`best/`, `final/`), so evaluation, the predictions file and anyone's inference outside sbs-train
build the same prompt: `PromptFormat.load(folder).prompt_ids(tokenizer, "label", text)`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .data import EXPLAIN_PREFIX, PREDICT_PREFIX

FILE_NAME = "prompt_format.json"
FORMATS = ("auto", "chat", "plain")
INSTRUCTIONS = {"label": PREDICT_PREFIX, "rationale": EXPLAIN_PREFIX}
_PROBE = "\u2063sbs-target\u2063"  # an assistant turn that no template rewrites, to find what follows it


class PromptError(ValueError):
    """The tokenizer cannot render the prompt format (a chat template that fails, no end token...)."""


@dataclass
class PromptFormat:
    kind: str  # "chat" | "plain"
    end_token: str  # appended to every target; generation stops there
    end_token_id: int
    bos_token_id: int | None = None  # plain: prepended to every prompt
    instructions: dict[str, str] = field(default_factory=lambda: dict(INSTRUCTIONS))
    chat_template: str | None = None  # chat: the template the prompts were rendered with

    # -- building

    @classmethod
    def for_tokenizer(cls, tokenizer, choice: str = "auto") -> PromptFormat:
        """The format for this tokenizer: chat if it has a template (or `choice` says so), else plain."""
        if choice not in FORMATS:
            raise PromptError(f"--prompt-format must be one of {', '.join(FORMATS)}, not {choice!r}")
        template = getattr(tokenizer, "chat_template", None)
        if choice == "chat" and not template:
            raise PromptError("--prompt-format chat: the tokenizer has no chat template")
        if template and choice != "plain":
            fmt = cls("chat", "", -1, chat_template=template if isinstance(template, str) else None)
            fmt.end_token, fmt.end_token_id = _end_of_turn(tokenizer)
            fmt.prompt_text(
                "label", "2 + 2", tokenizer
            )  # fail now, with a clear message, if the template cannot render
            return fmt
        if tokenizer.eos_token_id is None:
            raise PromptError(
                "the tokenizer has neither a chat template nor an EOS token, so a target cannot be ended; "
                "set tokenizer.eos_token and save the tokenizer next to the model"
            )
        return cls("plain", tokenizer.eos_token, tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)

    # -- rendering

    def user_text(self, task: str, text: str) -> str:
        return self.instructions[task] + text

    def prompt_text(self, task: str, text: str, tokenizer=None) -> str:
        """The prompt as text (chat: the rendered template, up to the assistant's turn)."""
        if self.kind == "plain":
            return self.user_text(task, text) + "\n"
        if tokenizer is None:
            raise PromptError("a chat prompt needs the tokenizer to render its template")
        try:
            out = tokenizer.apply_chat_template(
                [{"role": "user", "content": self.user_text(task, text)}],
                chat_template=self.chat_template,
                tokenize=False,
                add_generation_prompt=True,
            )
        except Exception as e:  # jinja raises TemplateError, UndefinedError, TypeError...
            raise PromptError(f"the tokenizer's chat template failed to render a user turn: {e}") from e
        if not isinstance(out, str):
            raise PromptError(f"the chat template rendered {type(out).__name__}, not text")
        return out

    def prompt_ids(self, tokenizer, task: str, text: str) -> list[int]:
        """Token ids of the prompt, exactly as used in training and evaluation."""
        if self.kind == "chat":
            return tokenizer(self.prompt_text(task, text, tokenizer), add_special_tokens=False)["input_ids"]
        ids = tokenizer(self.prompt_text(task, text), add_special_tokens=False)["input_ids"]
        return ([self.bos_token_id] if self.bos_token_id is not None else []) + ids

    def target_ids(self, tokenizer, text: str, max_len: int) -> list[int]:
        """The target's ids, cut to `max_len - 1`, then the end token."""
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[: max(0, max_len - 1)] + [self.end_token_id]

    # -- storing

    def to_json(self) -> dict:
        return {"format": "sbs-train-prompt", "version": 1, **asdict(self)}

    def save(self, folder: str | Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / FILE_NAME).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> PromptFormat:
        path = Path(folder) / FILE_NAME
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise PromptError(f"{path}: cannot read the prompt format ({e})") from e
        if d.get("format") != "sbs-train-prompt":
            raise PromptError(f"{path}: not an sbs-train prompt format file")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _end_of_turn(tokenizer) -> tuple[str, int]:
    """The special token a chat template writes right after an assistant turn (else EOS)."""
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": _PROBE}]
    try:
        full = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception as e:
        raise PromptError(f"the tokenizer's chat template failed to render an assistant turn: {e}") from e
    after = full.split(_PROBE, 1)[1] if isinstance(full, str) and _PROBE in full else ""
    special = set(tokenizer.all_special_ids) | {
        i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)
    }
    for tid in tokenizer(after, add_special_tokens=False)["input_ids"] if after.strip() else []:
        if tid in special:
            return tokenizer.convert_ids_to_tokens(tid), tid
        break
    if tokenizer.eos_token_id is None:
        raise PromptError(
            "the chat template ends an assistant turn with no special token and the tokenizer has no EOS"
        )
    return tokenizer.eos_token, tokenizer.eos_token_id
