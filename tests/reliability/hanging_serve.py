"""``crossrank`` with a fault injected: with CROSSRANK_TEST_HANG=1 every model call hangs
forever, as a stuck kernel or a deadlocked native library would. Run by
test_watchdog.py as ``python tests/reliability/hanging_serve.py serve ...``."""

import os
import threading

from crossrank.cli import main
from crossrank.reranker import Reranker

if os.environ.get("CROSSRANK_TEST_HANG") == "1":

    def hang(self, features):
        threading.Event().wait()  # never returns

    Reranker.logits = hang

main()
