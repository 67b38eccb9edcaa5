"""A small GPT: token and position embeddings, pre-LayerNorm blocks, a causal attention that is
passed in, and a language-model head tied to the token embedding (GPT-2's shape, nanoGPT's size).

`attention(q, k, v)` takes q, k, v of shape (batch, heads, length, head_dim) and returns causal
attention of the same shape; everything else in the model is plain PyTorch, so two models built
from the same seed with different attention functions differ only there. No dropout: a training
run is then a function of its seed and its batches.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    context: int = 256
    n_layer: int = 6
    n_head: int = 6
    head_dim: int = 64

    def __post_init__(self):
        for name in ("vocab_size", "context", "n_layer", "n_head", "head_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def width(self) -> int:
        """The residual stream's width: all heads side by side."""
        return self.n_head * self.head_dim


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, attention: Attention):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        # Three projections (not one fused qkv): each of dQ, dK, dV then has a weight of its own,
        # whose gradient shows that gradient alone. The keys have no bias: adding one vector to every
        # key adds a constant to each query's scores, which the softmax ignores, so its gradient is
        # zero and only rounding would train it.
        self.q = nn.Linear(config.width, config.width)
        self.k = nn.Linear(config.width, config.width, bias=False)
        self.v = nn.Linear(config.width, config.width)
        self.proj = nn.Linear(config.width, config.width)
        self.attention = attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        # (B, L, H, D) -> (B, H, L, D) views: strided, as a model hands them to a kernel.
        q, k, v = (f(x).view(batch, length, self.n_head, self.head_dim).transpose(1, 2)
                   for f in (self.q, self.k, self.v))
        y = self.attention(q, k, v)
        if y.shape != (batch, self.n_head, length, self.head_dim):
            raise ValueError(f"the attention function returned shape {tuple(y.shape)}, expected "
                             f"{(batch, self.n_head, length, self.head_dim)}")
        return self.proj(y.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    """x + attention(LN(x)), then x + MLP(LN(x)): pre-LN, GPT-2's order."""

    def __init__(self, config: GPTConfig, attention: Attention):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.width)
        self.attn = CausalSelfAttention(config, attention)
        self.ln2 = nn.LayerNorm(config.width)
        self.mlp = nn.Sequential(nn.Linear(config.width, 4 * config.width), nn.GELU(),
                                 nn.Linear(4 * config.width, config.width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig, attention: Attention):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.width)
        self.pos_emb = nn.Embedding(config.context, config.width)
        self.blocks = nn.ModuleList(Block(config, attention) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, config.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # tied, as in GPT-2
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: residual projections shrink with depth
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None):
        """(logits (B, L, vocab), mean cross-entropy against `targets` or None)."""
        length = tokens.shape[1]
        if length > self.config.context:
            raise ValueError(f"{length} tokens exceed the model's context of {self.config.context}")
        x = self.tok_emb(tokens) + self.pos_emb(torch.arange(length, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, new_tokens: int, generator: torch.Generator | None = None):
        """`tokens` (B, L) followed by `new_tokens` sampled one at a time from the model."""
        for _ in range(new_tokens):
            logits, _ = self(tokens[:, -self.config.context:])
            probs = torch.softmax(logits[:, -1].float(), dim=-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(tokens.device)
            tokens = torch.cat([tokens, nxt], dim=1)
        return tokens
