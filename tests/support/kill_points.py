"""Kill a multi-step write at one of its named checkpoints, in process.

The lake's writers call a module-level hook (``storage.swap_checkpoint``,
``retention.retention_checkpoint``, ...) with the name of each step they finish; a test
replaces it to raise there, as a kill would stop the writer, then puts it back.
"""

from __future__ import annotations


def kill_at(monkeypatch, module, hook: str, step: str) -> None:
    """``module.<hook>(name)`` raises KeyboardInterrupt when ``name == step``."""

    def checkpoint(reached: str) -> None:
        if reached == step:
            raise KeyboardInterrupt(f"killed at {reached}")

    monkeypatch.setattr(module, hook, checkpoint)


def revive(monkeypatch, module, hook: str) -> None:
    """The hook does nothing again: the next run goes through every step."""
    monkeypatch.setattr(module, hook, lambda reached: None)
