import os

import pytest
import torch

# One intra-op thread: the tests use tiny tensors, and on a small shared machine (CI has 2 cores)
# more threads than free cores make every op spin; subprocesses (DDP, notebook) inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
