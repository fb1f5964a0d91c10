import sys

from dnnlab.cli import main

sys.exit(main())
