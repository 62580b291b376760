"""``python -m rtecs_server``: the same as the ``rtecs-server`` command."""

import sys

from rtecs_server.cli import main

sys.exit(main())
