import sys

from gelanc.cli import main

sys.exit(main())
