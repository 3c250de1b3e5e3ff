#!/usr/bin/env python3
"""EAGLE-1/2 and EAGLE-3 checkpoints to GGUF: a script around pyeagle.convert (same as
`python -m pyeagle.convert`). Usage: see docs/FORMAT.md or --help."""
import sys

from pyeagle.convert import main

if __name__ == "__main__":
    sys.exit(main())
