"""A registry of test-model factories that refuses duplicate names (one per model family)."""


class Registry(dict):
    def register(self, fn):
        if fn.__name__ in self:
            raise ValueError(f"duplicate test model {fn.__name__!r}")
        self[fn.__name__] = fn
        return fn
