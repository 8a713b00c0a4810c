import sys

from ipex_aot.cli import main

sys.exit(main())
