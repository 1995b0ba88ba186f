"""The code that runs inside a Kaggle kernel: resumable stable-baselines3 training.

Never imports `orchestrator`. `config` and `layout` use only the standard library and
pydantic; everything heavy (torch, SB3) is imported lazily by the runtime.
"""

__version__ = "0.1.0"
