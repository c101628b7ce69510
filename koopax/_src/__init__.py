"""koopax internals: not part of the public API (see ``koopax``)."""
