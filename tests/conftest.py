import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Generated data and pre-trained weights go to a per-session temporary cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SELFTRAIN_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield
