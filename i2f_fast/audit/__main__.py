"""``python -m i2f_fast.audit ARGS`` is ``i2f-fast audit ARGS``; the entry point for torch.distributed:

    torchrun --nproc-per-node=N -m i2f_fast.audit --out DIR [...]

Each rank joins the process group from torchrun's environment (gloo on CPU, NCCL on GPU), audits its
strided share of the samples and writes its shards; rank 0 merges them and writes the report.
"""
import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["audit", *sys.argv[1:]]))
