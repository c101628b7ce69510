"""A character-level transformer language model, AdamW + warmup-cosine vs AdamW + koopax."""
