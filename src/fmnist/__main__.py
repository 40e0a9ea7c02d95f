import sys

from fmnist.cli import console_main

sys.exit(console_main())
