"""`python -m orchestrator.emulator serve ...`"""

from orchestrator.emulator.cli import app

if __name__ == "__main__":
    app(prog_name="python -m orchestrator.emulator")
