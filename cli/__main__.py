"""`python -m cli ...`: the same as the console script `onboarding ...`."""

import sys

from cli.main import main

sys.exit(main())
