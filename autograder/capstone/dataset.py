"""The capstone's text as characters, and the batches that every training run sees.

The text is tiny Shakespeare (texts/README.md: source and licence), shipped with the package.
The vocabulary is the sorted set of its characters; a token is a character's index in it.
`Batches` draws every batch's start offsets up front from one seeded generator, so two runs with
the same seed train on exactly the same sequence of batches, whatever else they do.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

TEXT = Path(__file__).with_name("texts") / "tinyshakespeare.txt"
# Held out from training: the last tenth of the text (nanoGPT's split of the same file).
TRAIN_FRACTION = 0.9


@dataclass(frozen=True)
class CharText:
    """A text and its character vocabulary."""

    chars: str  # every distinct character, sorted: the token of chars[i] is i
    text: str

    @classmethod
    def load(cls, path: Path | str = TEXT, limit: int | None = None) -> CharText:
        """The text at `path` (default: tiny Shakespeare), its first `limit` characters if given."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no text at {path}: the capstone's text ships in autograder/capstone/texts/")
        text = path.read_text(encoding="utf-8")
        if limit is not None:
            if limit < 2:
                raise ValueError(f"limit must keep at least 2 characters, got {limit}")
            text = text[:limit]
        if len(text) < 2:
            raise ValueError(f"{path} holds {len(text)} characters: too few to predict one from another")
        return cls("".join(sorted(set(text))), text)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """The tokens of `text` (int64); a character outside the vocabulary is an error."""
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {unknown!r}")
        return torch.tensor([index[c] for c in text], dtype=torch.int64)

    def decode(self, tokens) -> str:
        """The text of `tokens` (a tensor or a sequence of ints)."""
        ids = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"tokens outside the vocabulary of {self.vocab_size}: {bad[:5]}")
        return "".join(self.chars[i] for i in ids)

    def tokens(self) -> torch.Tensor:
        return self.encode(self.text)

    def split(self, fraction: float = TRAIN_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
        """(training tokens, held-out tokens): the first `fraction` of the text, and the rest."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        tokens = self.tokens()
        cut = int(len(tokens) * fraction)
        return tokens[:cut], tokens[cut:]


class Batches:
    """`steps` batches of `batch_size` windows of `context` tokens, each window's targets the
    same window one token later; every offset drawn once from a generator seeded with `seed`."""

    def __init__(self, tokens: torch.Tensor, batch_size: int, context: int, steps: int, seed: int):
        for name, value in (("batch_size", batch_size), ("context", context), ("steps", steps)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if len(tokens) < context + 1:
            raise ValueError(f"a context of {context} needs at least {context + 1} tokens, got {len(tokens)}")
        self.tokens, self.context, self.seed = tokens, context, seed
        generator = torch.Generator().manual_seed(seed)
        self.offsets = torch.randint(len(tokens) - context, (steps, batch_size), generator=generator)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of batch `step`, each (batch_size, context) int64 on the CPU."""
        if not 0 <= step < len(self):
            raise IndexError(f"batch {step} of {len(self)}")
        rows = self.offsets[step][:, None] + torch.arange(self.context + 1)
        window = self.tokens[rows]
        return window[:, :-1], window[:, 1:]

    @property
    def tokens_per_batch(self) -> int:
        return self.offsets.shape[1] * self.context
