"""`python -m bench`: the same command as `bench`."""

import sys

from .cli import main

sys.exit(main())
