"""A KeyRoom that sends its own process a SIGTERM when the Nth episode starts (preemption tests).

N comes from `$EMPO2_TEST_SIGTERM_AT_RESET` (unset: never), counted over every environment of the
process; the time of the signal is written to `$EMPO2_TEST_SIGNAL_STAMP`.
"""

import os
import signal
import time
from typing import ClassVar

from empo2.envs import KeyRoomEnv


class SignallingKeyRoom(KeyRoomEnv):
    resets: ClassVar[int] = 0
    steps_on_threads: ClassVar[bool] = False  # the reset count is shared by every instance

    def reset(self, instance):
        SignallingKeyRoom.resets += 1
        if str(SignallingKeyRoom.resets) == os.environ.get("EMPO2_TEST_SIGTERM_AT_RESET"):
            with open(os.environ["EMPO2_TEST_SIGNAL_STAMP"], "w") as fh:
                fh.write(repr(time.time()))
            os.kill(os.getpid(), signal.SIGTERM)
        return super().reset(instance)
