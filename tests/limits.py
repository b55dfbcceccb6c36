"""Wall-clock limits of the tests' subprocesses and waits.

Generous on purpose: a slow or heavily loaded machine must never fail a test, only a hung process
should. WMJAX_TEST_TIMEOUT (seconds) overrides the default of one hour.
"""

import os

TIMEOUT_S = float(os.environ.get('WMJAX_TEST_TIMEOUT', '3600'))
