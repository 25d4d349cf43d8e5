"""`python -m demoprof_ros.cli` = `demoprof`."""
import sys

from . import main

sys.exit(main())
