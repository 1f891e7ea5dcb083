"""``python -m stream`` is the ``checkout-stream`` command."""

import sys

from stream.cli import main

sys.exit(main())
