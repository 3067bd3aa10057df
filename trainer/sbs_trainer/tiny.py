"""Tiny random-initialised models with their tokenizers, for demos and tests without network.

Four architectures (`ARCHES`):

- ``t5``: a T5ForConditionalGeneration with the file-less ByT5 tokenizer (`tiny_t5`);
- ``llama``, ``qwen2``, ``gpt2``: LlamaForCausalLM / Qwen2ForCausalLM (with grouped-query attention) /
  GPT2LMHeadModel (`tiny_causal`), each with a byte-level BPE (`tiny_tokenizer`) trained in a fraction of
  a second on a small corpus embedded here, whose special tokens mimic the real family: Llama's ``<s>``
  prepended to every encoding and a ``<pad>``; Qwen's ChatML chat template, ``<|im_end|>`` as eos and no
  pad token; GPT-2's single ``<|endoftext|>`` and no pad token.

`--model tiny-t5` builds a T5 in memory (seeded by --seed); `python -m sbs_trainer.tiny DIR --arch ARCH`
writes one to a folder (save_pretrained) that `--model DIR` or any transformers code loads offline
(AutoTokenizer with AutoModelForCausalLM, or AutoModelForSeq2SeqLM for t5).
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

ARCHES = ("t5", "llama", "qwen2", "gpt2")
CAUSAL_ARCHES = ARCHES[1:]
VOCAB_SIZE = 1024  # len(tiny_tokenizer(arch)) for every causal arch, special tokens included
MAX_POSITIONS = 2048

# The tokenizer's training text: short word problems, NLI pairs and commonsense questions with rationales,
# in the style of the exports the trainer reads. Changing it changes every tiny causal tokenizer.
CORPUS = """\
Tom has 3 apples. He buys 4 more apples. How many apples does Tom have now?
Tom had 3 apples and bought 4 more, so he has ( 3.0 + 4.0 ) = 7 apples. The answer is 7.
Sara had 12 pencils. She gave 5 pencils to her friend. How many pencils does Sara have left?
She gave away 5 of her 12 pencils, so ( 12.0 - 5.0 ) = 7 pencils are left. The answer is 7.
A baker made 6 trays of cookies with 8 cookies on each tray. How many cookies did he make?
Each tray holds 8 cookies and there are 6 trays, so ( 6.0 * 8.0 ) = 48 cookies. The answer is 48.
There are 20 students and 4 buses. If each bus carries the same number, how many ride on each bus?
The 20 students are shared by 4 buses, so ( 20.0 / 4.0 ) = 5 students ride on each bus.
Jack read 15 pages on Monday and 9 pages on Tuesday. How many pages did he read in all?
The numbers 0 1 2 3 4 5 6 7 8 9 10 11 13 14 16 17 18 19 21 25 30 36 42 50 64 99 100 are numbers.
Premise: A man is playing a guitar on a stage. Hypothesis: A person is making music.
Answer: entailment, because playing a guitar on a stage is making music.
Premise: Two dogs run through the snow. Hypothesis: The dogs are sleeping inside the house.
Answer: contradiction, because dogs that run through the snow are not sleeping inside.
Premise: A woman is reading a book in the park. Hypothesis: The woman is reading a novel.
Answer: neutral, because the book might not be a novel, so we cannot tell.
Question: Where would you put a plate after washing it? Choices: cupboard, oven, garden, car, bed.
Explain: Clean plates are kept in a cupboard, so the answer is cupboard.
Question: What do people use to cut paper? Choices: scissors, spoon, pillow, water, shoe.
Explain: Scissors are made to cut paper, so the answer is scissors.
Question: If it is raining, what should you take when you go outside? Choices: umbrella, sand, ice.
Explain: An umbrella keeps you dry in the rain, so the answer is umbrella.
Predict the label and explain the rationale. We predict the answer and explain why it is true.
A student model learns to predict the label and to predict a rationale that explains the answer.
[label] predict: [rationale] explain: The rationale explains the answer step by step.
Let us think step by step. First we find the total, then we subtract what was given away.
The teacher asked the class a question, and every student wrote an answer with a reason.
Because the train left at 2 and arrived at 5, the trip took ( 5.0 - 2.0 ) = 3 hours.
A farmer has 7 cows and 9 sheep. How many animals does the farmer have? The answer is 16.
Mary earns 10 dollars an hour and works 6 hours, so she earns ( 10.0 * 6.0 ) = 60 dollars.
The water in the glass is cold, so the ice does not melt quickly. Is that true or false?
People often drink coffee in the morning because it helps them wake up and feel awake.
Sentence one: The cat sat on the mat. Sentence two: An animal is on the mat. Entailment.
Why do birds fly south in winter? Because the weather is warmer and there is more food there.
John has 2.5 liters of juice and drinks 0.5 liters, so ( 2.5 - 0.5 ) = 2.0 liters remain.
What is the sum of 8 and 13? We add them: ( 8.0 + 13.0 ) = 21. So the answer is 21.
The children played football in the yard until it got dark, then they went home for dinner.
If a shop sells 3 shirts for 9 dollars, one shirt costs ( 9.0 / 3.0 ) = 3 dollars.
Which object is heavier, a feather or a brick? A brick is heavier, so the answer is brick.
Anna bought 5 boxes of crayons with 24 crayons in each box, so she has ( 5.0 * 24.0 ) = 120 crayons.
A library had 350 books, lent out 128 and got 47 back. Now it has ( 350.0 - 128.0 + 47.0 ) = 269 books.
Premise: A young girl is jumping into a swimming pool. Hypothesis: The girl is getting wet. Entailment.
Premise: The old man is cooking soup in the kitchen. Hypothesis: He is driving a truck. Contradiction.
Question: What would you find at a beach? Choices: shells, computers, blankets, mountains, snowmen.
Explain: Waves bring shells onto the sand of a beach, so the answer is shells.
Question: Where do you keep milk cold? Choices: refrigerator, cabinet, backpack, desk, mailbox.
Explain: A refrigerator keeps food and milk cold and fresh, so the answer is refrigerator.
Hypothesis and premise disagree, therefore the relationship is a contradiction, not an entailment.
Quickly calculate the average of 6, 8 and 10: ( 6.0 + 8.0 + 10.0 ) / 3.0 = 8. Answer: 8.
Yesterday it was sunny; today it is cloudy with strong wind, and tomorrow it might snow.
The quick brown fox jumps over the lazy dog while the zebra watches from behind a big tree.
Olivia planted 14 tomato seeds and 2 of them did not grow, so ( 14.0 - 2.0 ) = 12 plants grew.
Every morning, Kevin walks his puppy to the river, throws a stick, and then jogs back home.
What happens to water when it freezes? It becomes solid ice, so the answer is that it turns into ice.
Is a whale a fish? No, because a whale breathes air and feeds its baby milk, it is a mammal.
"""

# Per causal arch: the special tokens in id order, whether they come before the learned vocabulary (ids
# 0..k-1, as in Llama) or after it (as in GPT-2 and Qwen), and the tokenizer's named special tokens.
_SPECIALS: dict[str, tuple[tuple[str, ...], bool, dict[str, str]]] = {
    "llama": (
        ("<s>", "</s>", "<pad>"),
        True,
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
    ),
    "qwen2": (("<|endoftext|>", "<|im_start|>", "<|im_end|>"), False, {"eos_token": "<|im_end|>"}),
    "gpt2": (
        ("<|endoftext|>",),
        False,
        {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
    ),
}

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _check_causal(arch: str) -> None:
    if arch not in CAUSAL_ARCHES:
        raise ValueError(f"unknown causal arch {arch!r}; expected one of {CAUSAL_ARCHES} (t5: see tiny_t5)")


@functools.cache
def _tokenizer_json(arch: str) -> str:
    """Train the byte-level BPE for `arch` once per process; its `tokenizers` JSON serialisation."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    specials, first, _ = _SPECIALS[arch]
    tk = Tokenizer(models.BPE())
    if arch == "qwen2":  # Qwen2Tokenizer's own normalizer and pre-tokenizer (digits split one by one)
        from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

        tk.normalizer = normalizers.NFC()
        tk.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:  # GPT-2's regex, as in GPT-2 and Llama 3
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - (0 if first else len(specials)),
        min_frequency=1,
        special_tokens=list(specials) if first else [],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: any text encodes, no unk
        show_progress=False,
    )
    tk.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    if not first:
        tk.add_special_tokens(list(specials))  # appended after the learned vocabulary, in order
    if arch == "llama":
        bos = specials[0]
        tk.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0",
            pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
            special_tokens=[(bos, tk.token_to_id(bos))],
        )
    else:
        tk.post_processor = processors.ByteLevel(trim_offsets=False)
    return tk.to_str()


def tiny_tokenizer(arch: str) -> PreTrainedTokenizerFast:
    """A fresh byte-level BPE tokenizer of `VOCAB_SIZE` ids (special tokens included) for a causal `arch`.

    Deterministic: the same merges and ids on every call and in every process; any text encodes (no unk)
    and decodes back. `llama` prepends ``<s>`` to every encoding and pads with ``<pad>``; `qwen2` is a
    Qwen2Tokenizer with ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` (eos), no bos, no pad token and
    the ChatML chat template; `gpt2` uses ``<|endoftext|>`` as bos, eos and unk and has no pad token.
    The class is the one AutoTokenizer picks for a saved copy, so a reload behaves the same.
    """
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    _check_causal(arch)
    specials, _, named = _SPECIALS[arch]
    if arch != "qwen2":
        return PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer.from_str(_tokenizer_json(arch)),
            model_max_length=MAX_POSITIONS,
            **named,
        )
    # AutoTokenizer always loads a qwen2 checkpoint's tokenizer as Qwen2Tokenizer, which rebuilds the backend
    # from vocab and merges; build it the same way. The special tokens are in `vocab` so they keep their ids.
    from transformers import Qwen2Tokenizer

    data = json.loads(_tokenizer_json(arch))
    vocab = {**data["model"]["vocab"], **{t["content"]: t["id"] for t in data["added_tokens"]}}
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=[tuple(m) for m in data["model"]["merges"]],
        unk_token=None,
        pad_token=None,
        extra_special_tokens=list(specials),
        model_max_length=MAX_POSITIONS,
        **named,
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def tiny_causal(
    arch: str, d_model: int = 64, layers: int = 2, heads: int = 4, dropout: float = 0.0
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """(model, tokenizer): a random LlamaForCausalLM / Qwen2ForCausalLM / GPT2LMHeadModel and `tiny_tokenizer`.

    Tied embeddings, MLP width 2*d_model, 2048 positions, SDPA attention; Qwen2 gets grouped-query attention
    (the largest divisor of `heads` that is at most heads//2 key/value heads). The config and the
    generation config carry the tokenizer's bos/eos/pad ids (pad None where the tokenizer has none).
    """
    _check_causal(arch)
    if d_model % heads:
        raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
    import transformers

    tok = tiny_tokenizer(arch)
    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    common = dict(vocab_size=len(tok), tie_word_embeddings=True, attn_implementation="sdpa", **ids)
    if arch == "gpt2":
        config = transformers.GPT2Config(
            n_embd=d_model,
            n_layer=layers,
            n_head=heads,
            n_inner=2 * d_model,
            n_positions=MAX_POSITIONS,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            **common,
        )
        model = transformers.GPT2LMHeadModel(config)
    else:
        kv_heads = (
            heads if arch == "llama" else max(d for d in range(1, max(1, heads // 2) + 1) if heads % d == 0)
        )
        cls_config, cls_model = {
            "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
            "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        }[arch]
        config = cls_config(
            hidden_size=d_model,
            intermediate_size=2 * d_model,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            max_position_embeddings=MAX_POSITIONS,
            attention_dropout=dropout,
            **common,
        )
        model = cls_model(config)
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = (
        ids["bos_token_id"],
        ids["eos_token_id"],
        ids["pad_token_id"],
    )
    return model, tok


def tiny_t5(
    d_model: int = 64, layers: int = 2, heads: int = 4, d_ff: int | None = None, dropout: float = 0.1
):
    """(T5ForConditionalGeneration, ByT5Tokenizer) small enough to train on a laptop CPU in seconds."""
    from transformers import ByT5Tokenizer, T5Config, T5ForConditionalGeneration

    tok = ByT5Tokenizer()
    config = T5Config(
        vocab_size=len(tok),
        d_model=d_model,
        d_kv=max(8, d_model // heads),
        d_ff=d_ff or 2 * d_model,
        num_layers=layers,
        num_decoder_layers=layers,
        num_heads=heads,
        dropout_rate=dropout,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
    )
    return T5ForConditionalGeneration(config), tok


def write_tiny_t5(path: str | Path, seed: int = 0, **kw) -> Path:
    """Save a seeded tiny T5 and its tokenizer with save_pretrained; returns the folder."""
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(seed)
    model, tok = tiny_t5(**kw)
    path = Path(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write_tiny(path: str | Path, arch: str = "t5", seed: int = 0, **kw) -> Path:
    """Save a seeded tiny `arch` model and its tokenizer with save_pretrained; returns the folder.

    `kw` goes to `tiny_t5` (t5) or `tiny_causal`. The folder loads offline with AutoTokenizer and
    AutoModelForCausalLM (AutoModelForSeq2SeqLM for t5).
    """
    if arch == "t5":
        return write_tiny_t5(path, seed=seed, **kw)
    _check_causal(arch)
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(seed)
    model, tok = tiny_causal(arch, **kw)
    path = Path(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m sbs_trainer.tiny",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", help="folder to write the model and tokenizer to")
    p.add_argument("--arch", choices=ARCHES, default="t5", help="model family (default: t5)")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(write_tiny(a.out, arch=a.arch, seed=a.seed, d_model=a.d_model, layers=a.layers, heads=a.heads))


if __name__ == "__main__":
    main()
