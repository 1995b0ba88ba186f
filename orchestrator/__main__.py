"""`python -m orchestrator`: the same as the `orchestrate` command."""

import sys

from orchestrator.commands import main

sys.exit(main())
