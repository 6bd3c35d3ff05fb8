import os

import pytest
import torch

# Small CPU machines: keep intra-op threads fixed so runs are repeatable and do not oversubscribe.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
