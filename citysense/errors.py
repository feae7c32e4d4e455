"""Errors a user can fix at start-up, reported as one line naming what to change.

Why a type of its own: the CLI prints these as ``citysense: <message>`` and exits 2, with no
traceback (``--debug`` shows it), whereas anything else that fails at start is a fault of ours
and exits 1. The message must name the setting (environment variable and TOML key) to change,
and never a secret: URLs are masked with :func:`citysense.settings.mask_url`.
"""

from __future__ import annotations

__all__ = ["StartupError"]


class StartupError(Exception):
    """A stage cannot start because of its configuration or its environment (a port in use, a
    broker unreachable, a wrong password, a missing database); ``str()`` is the one line."""
