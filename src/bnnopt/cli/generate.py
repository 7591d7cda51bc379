"""``bnnopt generate``: sample text from a trained byte-level language model.

    bnnopt generate RUN_OR_FILE --prompt TEXT --tokens N [--temperature T] [--seed S]

RUN_OR_FILE is a run directory / checkpoint of an LM run (e.g. ``--protocol lm-tiny``)
or a packed export of one (``bnnopt export``, read with ``load_packed``); the
model must be a GPT (:class:`bnnopt.models.gpt.GPT`) trained on text. The prompt is
encoded as UTF-8 bytes (one token per byte, the vocabulary of
:mod:`bnnopt.data.text`); N tokens are sampled with :meth:`GPT.generate` (a CPU
``torch.Generator`` seeded with S, temperature T, 0 = greedy) and the prompt plus
the sample is printed, decoded as UTF-8 (an incomplete or invalid byte sequence is
shown as U+FFFD). The same checkpoint and its packed export give the same text for
the same seed (their logits are equal). Bad input (an empty prompt, a byte outside
the model's vocabulary, N < 1, a negative temperature, a source that is not a
language model) is a one-line error, exit status 2.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def load_lm(source: str | Path) -> tuple[Any, dict[str, Any]]:
    """The GPT of a run directory, checkpoint or packed file (eval mode) and its
    ``info`` (see :func:`bnnopt.cli.evaluate.load_any`); ValueError if it is not one."""
    from bnnopt.cli.evaluate import load_any
    from bnnopt.models.gpt import GPT

    path = Path(source)
    if not path.exists():
        raise ValueError(f"no such run directory or file: {path}")
    model, info = load_any(path)
    data = info.get("data") or {}
    if not isinstance(model, GPT) or data.get("task") != "lm":
        what = f"model {type(model).__name__}" + (f" on {info['dataset']}" if info.get("dataset") else "")
        raise ValueError(f"{path} is not a language model ({what}); generate needs a GPT trained "
                         "on text, e.g. a run of --protocol lm-tiny")
    return model, info


def encode_prompt(prompt: str, vocab_size: int) -> "torch.Tensor":
    """UTF-8 bytes of ``prompt`` as int64 tokens [1, len]; ValueError on an empty prompt or
    a byte the vocabulary does not hold (a model with fewer than 256 tokens)."""
    import torch

    data = prompt.encode("utf-8")
    if not data:
        raise ValueError("invalid --prompt ''; give at least one character")
    for char in prompt:
        bad = [b for b in char.encode("utf-8") if b >= vocab_size]
        if bad:
            raise ValueError(f"--prompt character {char!r} (byte {bad[0]}) is not in the model's "
                             f"vocabulary; valid: bytes 0..{vocab_size - 1}")
    return torch.tensor(list(data), dtype=torch.int64).unsqueeze(0)


def generate_text(source: str | Path, prompt: str, tokens: int, temperature: float = 1.0,
                  seed: int = 0) -> str:
    """Prompt + ``tokens`` sampled bytes, decoded as UTF-8 (see the module docstring)."""
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"invalid --tokens {tokens!r}; must be an integer >= 1")
    if not temperature >= 0:
        raise ValueError(f"invalid --temperature {temperature!r}; must be >= 0")
    import torch

    model, _ = load_lm(source)
    idx = encode_prompt(prompt, model.vocab_size)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(int(seed))
    out = model.generate(idx.to(device), tokens, temperature=temperature, generator=generator)
    return bytes(out[0].tolist()).decode("utf-8", errors="replace")


def cmd_generate(args) -> int:
    text = generate_text(args.source, args.prompt, args.tokens, args.temperature, args.seed)
    sys.stdout.write(text + "\n")
    return 0


def add_generate_command(subparsers: Any) -> None:
    """Add ``bnnopt generate`` to the CLI's sub-command parsers."""
    p = subparsers.add_parser("generate", help="sample text from a trained language model "
                                               "(run directory, checkpoint or packed file)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="LM run directory, checkpoint or packed (.bnnpk) file")
    p.add_argument("--prompt", required=True, help="text to continue (UTF-8 bytes)")
    p.add_argument("--tokens", type=int, required=True, help="number of bytes to sample (>= 1)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="softmax temperature (default 1; 0 = greedy)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(func=cmd_generate)
