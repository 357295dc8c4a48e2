"""Serving: an OpenAI-compatible API over a base model, its LoRA adapters and a mentor index."""
