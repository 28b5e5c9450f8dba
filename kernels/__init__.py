"""Attention and KV-cache kernels: each Triton kernel beside the plain-torch reference that defines it.

Cache layout shared by every kernel: a layer's K (and V) cache is
`[num_blocks, block_size, num_kv_heads, head_dim]`; token `t` of a sequence lives at
slot `block_table[t // block_size] * block_size + t % block_size`.
"""
