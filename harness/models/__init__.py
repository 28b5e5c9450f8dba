"""Llama-family models with paged attention: random-weight presets and Hugging Face checkpoints."""
