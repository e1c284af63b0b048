"""``python -m benchmarks [--quick] [--out DIR] [--only kernels,models,memory,coldstart,mnist,slices]``"""

import sys

from benchmarks import main

sys.exit(main())
