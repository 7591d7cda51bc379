"""``bnnopt`` with a pause at the start of every epoch, for the signal tests.

Run as a script (``python tests/cli/slow_bnnopt.py train ...``). Before each epoch it
touches ``$BNNOPT_TEST_MARKS/<pid>-<run dir name>-<epoch>`` (0-based epoch) and, from
epoch ``$BNNOPT_TEST_SLOW_FROM`` (default 0) on, sleeps ``$BNNOPT_TEST_SLOW`` seconds, so a
test knows which epoch each process is in and has time to signal it there (the epochs
before run at full speed). The patch sits at module level, so the worker processes of
``compare --jobs N`` (spawned: they import this file as ``__mp_main__``) get it too.
"""
import os
import time
from pathlib import Path

from bnnopt.cli.main import main
from bnnopt.train.trainer import Trainer

_train_epoch = Trainer.train_epoch


def _marked_slow_epoch(self, epoch):
    marks = os.environ.get("BNNOPT_TEST_MARKS")
    if marks:
        Path(marks, f"{os.getpid()}-{self.run_dir.parent.name}-{self.run_dir.name}-{epoch}").touch()
    if epoch >= int(os.environ.get("BNNOPT_TEST_SLOW_FROM", "0")):
        time.sleep(float(os.environ.get("BNNOPT_TEST_SLOW", "0")))
    return _train_epoch(self, epoch)


Trainer.train_epoch = _marked_slow_epoch

if __name__ == "__main__":
    raise SystemExit(main())
