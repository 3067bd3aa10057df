"""Run several `sbs-train` commands in one torchrun launch: the processes, imports and process group are
paid for once (each launch costs seconds on a busy 2-core box). `run` leaves a process group it did not
create alone, so this script owns the group and tears it down the way `train._teardown_distributed` does.

    torchrun --nproc-per-node 2 trainer/tests/torchrun_driver.py '[["--data", ...], ["--data", ...]]'
"""

from __future__ import annotations

import gc
import json
import sys

import torch.distributed as dist
from sbs_trainer.cli import main


def drive(runs: list[list[str]]) -> int:
    dist.init_process_group("gloo")
    ok = False
    try:
        for argv in runs:
            if main(argv) != 0:
                return 1
            gc.collect()  # free this run's DDP wrapper while the group is alive
            print(f"--- done: {argv[argv.index('--output') + 1]}", flush=True)
        ok = True
        return 0
    finally:
        gc.collect()
        if ok:
            dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(drive(json.loads(sys.argv[1])))
