"""Move whole KV blocks of every layer between the device cache and a host swap buffer."""

from __future__ import annotations

import torch


def swap_blocks_ref(
    src: torch.Tensor,  # [num_layers, 2, num_src_blocks, block_size, num_kv_heads, head_dim]
    dst: torch.Tensor,  # [num_layers, 2, num_dst_blocks, block_size, num_kv_heads, head_dim]
    src_block_ids: torch.Tensor,  # [n] int
    dst_block_ids: torch.Tensor,  # [n] int
) -> None:
    """Reference: dst[:, :, dst_block_ids] = src[:, :, src_block_ids], for all layers at once."""
    src_idx = src_block_ids.to(src.device).long()
    dst_idx = dst_block_ids.to(dst.device).long()
    dst[:, :, dst_idx] = src[:, :, src_idx].to(dst.device)
