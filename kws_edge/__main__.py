import sys

from kws_edge.cli import main

sys.exit(main())
