import sys

from dataflow_cli import main

sys.exit(main())
