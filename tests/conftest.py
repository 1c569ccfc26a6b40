"""Test-session settings shared by every test.

The suite pins torch (and every process it starts: DDP workers, the zoo and sweep runners,
notebook kernels) to one intra-op thread. The models under test are small, so a second thread
buys nothing on a quiet machine (measured: 14.7 s against 15.0 s for
``tests/callbacks/test_host_path.py``), while on a busy 2-core machine OpenMP's spinning
workers fight the other processes for the cores: the same file took 46.9 s with torch's default
two threads and 20.9 s with one, while two busy loops held both cores.
"""

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import torch  # noqa: E402  (after the environment, so OpenMP reads it at start-up)

torch.set_num_threads(1)
