"""Conformer-CTC (Gulati et al. 2020) with FastConformer's 8x depthwise-separable subsampling (Rekesh et al. 2023).

Each block: half feed-forward, relative-position multi-head self-attention (Transformer-XL style, as in NeMo),
convolution module, half feed-forward, layer norm. The model owns its log-mel front end, so it maps raw
16 kHz audio to CTC log-probabilities: `(B, N) -> (B, T', vocab_size + 1)`, the blank being the last class.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from anemone_speech.features import LogMel


def lengths_to_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    return torch.arange(t, device=lengths.device)[None] < lengths[:, None]  # (B, T) True on valid frames


class DepthwiseSubsampling(nn.Module):
    """log2(factor) stride-2 3x3 conv stages: a full conv first, then depthwise + pointwise (FastConformer)."""

    def __init__(self, n_mels: int, d_model: int, factor: int = 8, channels: int = 256) -> None:
        super().__init__()
        stages = int(math.log2(factor))
        if 2**stages != factor:
            raise ValueError(f"subsampling factor {factor} must be a power of 2")
        self.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(1, channels, 3, stride=2, padding=1), nn.ReLU())])
        for _ in range(stages - 1):
            self.stages.append(nn.Sequential(
                nn.Conv2d(channels, channels, 3, stride=2, padding=1, groups=channels),
                nn.Conv2d(channels, channels, 1), nn.ReLU()))
        freq = n_mels
        for _ in range(stages):
            freq = (freq - 1) // 2 + 1
        self.out = nn.Linear(channels * freq, d_model)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = feats.transpose(1, 2).unsqueeze(1)  # (B, 1, T, M)
        for stage in self.stages:
            x = stage(x)
            lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
            # zero frames past each length so a padded batch computes what the utterance alone would
            x = x * lengths_to_mask(lengths, x.shape[2])[:, None, :, None]
        b, c, t, f = x.shape  # (B, C, T', M')
        return self.out(x.transpose(1, 2).reshape(b, t, c * f)), lengths  # (B, T', D)


class RelPositionalEncoding(nn.Module):
    """Sinusoids for relative positions T-1 ... -(T-1): (1, 2T-1, D)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model

    def forward(self, t: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        pos = torch.arange(t - 1, -t, -1, device=device, dtype=torch.float32)[:, None]  # (2T-1, 1)
        div = torch.exp(torch.arange(0, self.d_model, 2, device=device, dtype=torch.float32)
                        * (-math.log(10000.0) / self.d_model))
        pe = torch.zeros(2 * t - 1, self.d_model, device=device)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        return pe.to(dtype)[None]


class RelPositionMultiHeadAttention(nn.Module):
    """Self-attention with Transformer-XL relative positions: score = (q+u)k^T + shift((q+v)p^T)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.h, self.dk = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.pos = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model)
        self.pos_bias_u = nn.Parameter(torch.zeros(n_heads, self.dk))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_heads, self.dk))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)
        self.dropout = dropout

    @staticmethod
    def rel_shift(x: torch.Tensor) -> torch.Tensor:
        b, h, t, p = x.shape  # (B, H, T, 2T-1)
        x = F.pad(x, (1, 0)).view(b, h, p + 1, t)[:, :, 1:].reshape(b, h, t, p)
        return x[..., : (p + 1) // 2]  # (B, H, T, T): entry [i, j] holds relative position i - j

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.h, self.dk).unbind(2)  # each (B, T, H, dk)
        p = self.pos(pos_emb).view(1, -1, self.h, self.dk).transpose(1, 2)  # (1, H, 2T-1, dk)
        q_u = (q + self.pos_bias_u).transpose(1, 2)  # (B, H, T, dk)
        q_v = (q + self.pos_bias_v).transpose(1, 2)
        bd = self.rel_shift(q_v @ p.transpose(-2, -1)) / math.sqrt(self.dk)  # (B, H, T, T)
        bd = bd.masked_fill(~mask[:, None, None, :], float("-inf"))  # keys on padding get no weight
        y = F.scaled_dot_product_attention(q_u, k.transpose(1, 2), v.transpose(1, 2), attn_mask=bd,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, dk)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class ConvModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv, batch norm, SiLU, pointwise conv."""

    def __init__(self, d_model: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pw1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.dw = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.bn = nn.BatchNorm1d(d_model)
        self.pw2 = nn.Conv1d(d_model, d_model, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = F.glu(self.pw1(self.norm(x).transpose(1, 2)), dim=1)  # (B, D, T)
        y = y.masked_fill(~mask[:, None, :], 0.0)  # padding must not leak into valid frames
        y = self.pw2(F.silu(self.bn(self.dw(y))))
        return self.drop(y.transpose(1, 2))


class FeedForward(nn.Sequential):
    def __init__(self, d_model: int, mult: int, dropout: float) -> None:
        super().__init__(nn.LayerNorm(d_model), nn.Linear(d_model, mult * d_model), nn.SiLU(), nn.Dropout(dropout),
                         nn.Linear(mult * d_model, d_model), nn.Dropout(dropout))


class ConformerBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, ff_mult: int, conv_kernel: int, dropout: float) -> None:
        super().__init__()
        self.ff1 = FeedForward(d_model, ff_mult, dropout)
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = RelPositionMultiHeadAttention(d_model, n_heads, dropout)
        self.attn_drop = nn.Dropout(dropout)
        self.conv = ConvModule(d_model, conv_kernel, dropout)
        self.ff2 = FeedForward(d_model, ff_mult, dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)  # macaron: two half-step feed-forwards around attention + conv
        x = x + self.attn_drop(self.attn(self.attn_norm(x), pos_emb, mask))
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x)


class ConformerCTC(nn.Module):
    """Raw audio -> CTC log-probs. Plain keyword arguments, so export and tests build it without a trainer."""

    def __init__(self, vocab_size: int, n_mels: int = 80, d_model: int = 144, n_layers: int = 4, n_heads: int = 4,
                 ff_mult: int = 4, conv_kernel: int = 15, subsampling_factor: int = 8, subsampling_channels: int = 144,
                 dropout: float = 0.1, sample_rate: int = 16_000) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.preprocessor = LogMel(sample_rate, n_mels)
        self.subsampling = DepthwiseSubsampling(n_mels, d_model, subsampling_factor, subsampling_channels)
        self.pos_enc = RelPositionalEncoding(d_model)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(ConformerBlock(d_model, n_heads, ff_mult, conv_kernel, dropout)
                                    for _ in range(n_layers))
        self.head = nn.Linear(d_model, vocab_size + 1)  # + CTC blank, the last class
        self.xscale = math.sqrt(d_model)

    def features(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.preprocessor(wav, lengths)  # (B, M, T), (B,)

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M, T) features -> (B, T', V+1) log-probs and (B,) output lengths."""
        x, lengths = self.subsampling(feats, lengths)  # (B, T', D)
        mask = lengths_to_mask(lengths, x.shape[1])
        pos_emb = self.drop(self.pos_enc(x.shape[1], x.device, x.dtype))
        x = self.drop(x * self.xscale)
        for layer in self.layers:
            x = layer(x, pos_emb, mask)
        return self.head(x).log_softmax(-1), lengths

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode(*self.features(wav, lengths))
