"""``python -m xent_rs``: the ``xent-rs`` command line (see :mod:`xent_rs.cli`)."""

import sys

from xent_rs.cli import main

sys.exit(main())
