"""``python -m exchange``: the same as the ``exchange`` console script."""

import sys

from exchange.cli.fast import main

sys.exit(main())
