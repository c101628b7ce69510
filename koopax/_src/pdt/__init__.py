"""PDT: the engine, the jump, the rise policies and the authors' scheduler."""
