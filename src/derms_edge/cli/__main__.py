"""``python -m derms_edge.cli``: the same as the ``derms-edge`` console script."""

import sys

from derms_edge.cli import main

sys.exit(main())
