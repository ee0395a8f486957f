"""Placeholder for yaml on a GPU image that lacks it (benchmarks/gpu/steps.py only).

SegDeepLib imports yaml at the top of modules whose tensor-level parts the GPU check uses
(networks, sliding window, losses); it never reads or writes a file with it. ``steps.py`` puts
the ``stubs`` folder on ``sys.path`` only when the real module cannot be imported; any use of
an attribute raises.
"""

STUB = True


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Missing(name)


class _Missing:
    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{__name__}.{self.name}: not installed (GPU check stub)")

    def __getattr__(self, attr: str):
        return _Missing(f"{self.name}.{attr}")
