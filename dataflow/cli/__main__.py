import sys

from dataflow.cli import main

sys.exit(main())
