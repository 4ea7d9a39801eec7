"""``python -m gateway`` is ``resume-gateway``."""

import sys

from gateway.cli import main

sys.exit(main())
