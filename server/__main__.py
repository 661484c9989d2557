"""`python -m server`: the command line (see server.cli)."""

import sys

from server.cli.commands import main

sys.exit(main())
