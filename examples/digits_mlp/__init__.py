"""The main job: an MLP on scikit-learn's digits, SGD vs SGD + koopax.

``python -m examples.compare`` runs it (into ``runs/compare``).
"""
