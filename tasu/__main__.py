"""`python -m tasu ...` (also what `deepspeed --module tasu ...` runs on each rank)."""

import sys

from tasu.cli import main

sys.exit(main())
