"""KGA: one engine (``engine``) over three column stores (``window``, ``basis``, ``masked``)."""
