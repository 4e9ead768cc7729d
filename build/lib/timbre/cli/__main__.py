import sys

from timbre.cli import main

sys.exit(main())
