"""Wall-clock limits of the tests' subprocesses and waits, and the tests' XLA flags.

Generous on purpose: a slow or heavily loaded machine must never fail a test, only a hung process
should. WMJAX_TEST_TIMEOUT (seconds) overrides the default of one hour.
"""

import os

TIMEOUT_S = float(os.environ.get('WMJAX_TEST_TIMEOUT', '3600'))

# XLA CPU backend without LLVM optimisations (set for every test process by conftest.py; a test
# that replaces XLA_FLAGS for a subprocess adds these). On 2 cores the suite took 454 s instead
# of 658 s with an empty compilation cache, and as long as before with a full one (RESULTS.md).
TEST_XLA_FLAGS = '--xla_backend_optimization_level=0'
