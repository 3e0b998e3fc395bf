"""``python -m jaxticket.cli``: the ``jaxticket`` command."""

import sys

from jaxticket.cli import main

sys.exit(main())
