"""The Joint-Modality Embedder (DiffX's contribution): layout tokens read the caption before the UNet.

Once per forward pass: H' = H + tanh(b_a) * CrossAttn(LN(H), c); H* = H' + tanh(b_f) * FF(LN(H')), with both
gates starting at 0, so a freshly initialised JME passes the layout tokens through unchanged. H* then feeds
every gated fuser of the UNet. Each layout token attends to the caption on its own, so a permutation of
the slots permutes the output the same way.
"""

from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn


class JointModalityEmbedder(nn.Module):
    def __init__(self, dim: int, context_dim: int, heads: int = 8):
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = Attention(query_dim=dim, cross_attention_dim=context_dim, heads=heads, dim_head=dim // heads)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.gate_attn = nn.Parameter(torch.zeros(()))
        self.gate_ff = nn.Parameter(torch.zeros(()))

    def forward(
        self, layout: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        bias = None
        if context_mask is not None:  # additive mask over caption tokens, as the UNet's own cross-attention uses
            bias = ((1 - context_mask.to(layout.dtype)) * -10000.0).unsqueeze(1)
        attended = self.attn(self.norm_attn(layout), encoder_hidden_states=context, attention_mask=bias)
        layout = layout + self.gate_attn.tanh() * attended
        return layout + self.gate_ff.tanh() * self.ff(self.norm_ff(layout))
