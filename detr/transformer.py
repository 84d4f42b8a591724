"""DETR's encoder-decoder transformer.

Same module names as the official code (itself adapted from ``torch.nn.Transformer``) so the
official checkpoints load unchanged, with three differences from ``torch.nn.Transformer``:
position encodings are added to queries and keys inside every attention, the post-norm encoder
has no final LayerNorm, and the decoder returns the (normalised) output of every layer.
Attention runs through ``nn.MultiheadAttention`` with ``need_weights=False``, which dispatches
to PyTorch's fused scaled-dot-product attention.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Transformer(nn.Module):
    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        normalize_before: bool = False,
    ):
        super().__init__()
        encoder_layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, normalize_before)
        encoder_norm = nn.LayerNorm(d_model) if normalize_before else None
        self.encoder = TransformerEncoder(encoder_layer, num_encoder_layers, encoder_norm)
        decoder_layer = TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, normalize_before)
        self.decoder = TransformerDecoder(decoder_layer, num_decoder_layers, nn.LayerNorm(d_model))
        self.d_model = d_model
        self.nhead = nhead
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(
        self,
        src: Tensor,
        mask: Tensor | None,
        query_embed: Tensor,
        pos_embed: Tensor,
        tgt: Tensor | None = None,
        tgt_mask: Tensor | None = None,
    ) -> Tensor:
        """src/pos_embed [B, C, H, W]; mask [B, H, W] (True = padding) or None; query_embed [Q, C] or [B, Q, C].

        ``tgt`` (decoder input, zeros by default) and ``tgt_mask`` (decoder self-attention mask)
        let training-only query groups share the decoder. Returns [L, B, Q, C], one slice per
        decoder layer.
        """
        bs = src.shape[0]
        src = src.flatten(2).permute(2, 0, 1)
        pos_embed = pos_embed.flatten(2).permute(2, 0, 1)
        query_pos = (
            query_embed.unsqueeze(1).expand(-1, bs, -1) if query_embed.dim() == 2 else query_embed.transpose(0, 1)
        )
        key_padding_mask = mask.flatten(1) if mask is not None else None
        if tgt is None:
            tgt = query_pos.new_zeros(query_pos.shape)
        else:
            tgt = tgt.transpose(0, 1)
        memory = self.encoder(src, key_padding_mask=key_padding_mask, pos=pos_embed)
        hs = self.decoder(
            tgt, memory, tgt_mask=tgt_mask, memory_key_padding_mask=key_padding_mask, pos=pos_embed, query_pos=query_pos
        )
        return hs.transpose(1, 2)


class TransformerEncoder(nn.Module):
    def __init__(self, encoder_layer: nn.Module, num_layers: int, norm: nn.Module | None = None):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.norm = norm

    def forward(self, src: Tensor, key_padding_mask: Tensor | None, pos: Tensor) -> Tensor:
        output = src
        for layer in self.layers:
            output = layer(output, key_padding_mask=key_padding_mask, pos=pos)
        if self.norm is not None:
            output = self.norm(output)
        return output


class TransformerDecoder(nn.Module):
    def __init__(self, decoder_layer: nn.Module, num_layers: int, norm: nn.Module):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.norm = norm

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None,
        memory_key_padding_mask: Tensor | None,
        pos: Tensor,
        query_pos: Tensor,
    ) -> Tensor:
        output = tgt
        intermediate = []
        for layer in self.layers:
            output = layer(
                output,
                memory,
                tgt_mask=tgt_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                pos=pos,
                query_pos=query_pos,
            )
            intermediate.append(self.norm(output))
        return torch.stack(intermediate)


class TransformerEncoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, normalize_before: bool):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def forward(self, src: Tensor, key_padding_mask: Tensor | None, pos: Tensor) -> Tensor:
        if self.normalize_before:
            src2 = self.norm1(src)
            q = k = src2 + pos
            src = src + self.dropout1(self._attend(q, k, src2, key_padding_mask))
            src2 = self.norm2(src)
            return src + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(src2)))))
        q = k = src + pos
        src = self.norm1(src + self.dropout1(self._attend(q, k, src, key_padding_mask)))
        return self.norm2(src + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(src))))))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        return self.self_attn(q, k, v, key_padding_mask=key_padding_mask, need_weights=False)[0]


class TransformerDecoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, normalize_before: bool):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None,
        memory_key_padding_mask: Tensor | None,
        pos: Tensor,
        query_pos: Tensor,
    ) -> Tensor:
        if self.normalize_before:
            tgt2 = self.norm1(tgt)
            q = k = tgt2 + query_pos
            tgt = tgt + self.dropout1(self.self_attn(q, k, tgt2, attn_mask=tgt_mask, need_weights=False)[0])
            tgt2 = self.norm2(tgt)
            tgt = tgt + self.dropout2(
                self.multihead_attn(
                    tgt2 + query_pos, memory + pos, memory, key_padding_mask=memory_key_padding_mask, need_weights=False
                )[0]
            )
            tgt2 = self.norm3(tgt)
            return tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(tgt2)))))
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, tgt, attn_mask=tgt_mask, need_weights=False)[0]))
        tgt = self.norm2(
            tgt
            + self.dropout2(
                self.multihead_attn(
                    tgt + query_pos, memory + pos, memory, key_padding_mask=memory_key_padding_mask, need_weights=False
                )[0]
            )
        )
        return self.norm3(tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(tgt))))))


def _clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])
