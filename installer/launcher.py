"""The frozen app's entry script: the same command line as the `llamarunner` console script."""

import sys

from llamarunner.cli import main

if __name__ == "__main__":
    sys.exit(main())
