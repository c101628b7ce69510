"""A tiny vision transformer on scikit-learn's digits, AdamW + warmup-cosine vs AdamW + koopax."""
