"""Backends: one interface (deploy/backends/base.py), one table of names (`make_backend`)."""

from shallowpi.deploy.backends.base import (
    Backend,
    BackendError,
    BackendOptions,
    Inpainting,
    make_backend,
)

__all__ = ["Backend", "BackendError", "BackendOptions", "Inpainting", "make_backend"]
