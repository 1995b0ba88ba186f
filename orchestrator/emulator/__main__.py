"""`python -m orchestrator.emulator serve ...`"""

from orchestrator.commands.emulator import app

if __name__ == "__main__":
    app(prog_name="python -m orchestrator.emulator")
