"""Kaggle's session limit, written once for both halves.

The kernel plans its stop against it (`RunConfig.session_limit_s` defaults to it) and the
orchestrator re-exports it (`orchestrator.capacity.SESSION_LIMIT_S`). Standard library only:
`orchestrate --help` reads it (the emulator's default) and must not load pydantic.
"""

# Kaggle's longest CPU or GPU session (TPU: 9 h); at it, Kaggle SIGKILLs the kernel.
KAGGLE_SESSION_LIMIT_S = 12 * 3600.0
