"""A tiny random-initialised T5 with the file-less ByT5 tokenizer, for demos and tests without network.

`--model tiny-t5` builds one in memory (seeded by --seed); `python -m sbs_trainer.tiny DIR` writes one
to a folder that `--model DIR` (or any transformers code) can load.
"""

from __future__ import annotations

import argparse
from pathlib import Path


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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sbs_trainer.tiny", description=__doc__)
    p.add_argument("out", help="folder to write the model and tokenizer to")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(write_tiny_t5(a.out, seed=a.seed, d_model=a.d_model, layers=a.layers, heads=a.heads))


if __name__ == "__main__":
    main()
