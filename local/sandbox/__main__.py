"""``python -m local.sandbox [--host H] [--port P]``: serve the sandbox on its own (see ``main``)."""

import sys

from local.sandbox.control import main

sys.exit(main())
