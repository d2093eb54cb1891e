import sys

from mlbench.main import main

sys.exit(main())
