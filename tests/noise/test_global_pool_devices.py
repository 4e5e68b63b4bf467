"""The global scope's guard against ranks whose devices draw different noise pools from one seed."""

from types import SimpleNamespace

import pytest
import torch

from immiscible_ops import distributed


def _props(sms, threads=2048, major=9, minor=0):
    return SimpleNamespace(multi_processor_count=sms, max_threads_per_multi_processor=threads,
                           major=major, minor=minor, name="NVIDIA H100 80GB HBM3")


@pytest.mark.parametrize("other", [
    _props(60),  # a MIG slice of the same GPU
    _props(114),  # H100 PCIe
    _props(132, threads=1536, major=8, minor=9),  # another architecture
])
def test_cuda_fingerprint_follows_what_randn_depends_on(monkeypatch, other):
    seen = iter([_props(132), _props(132), other])
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: next(seen))
    cuda = torch.device("cuda", 0)
    first, same, different = (distributed.random_stream_fingerprint(cuda) for _ in range(3))
    assert first == same != different


def test_cuda_and_cpu_pools_differ_and_torch_version_counts(monkeypatch):
    cpu = distributed.random_stream_fingerprint(torch.device("cpu"))
    assert cpu == distributed.random_stream_fingerprint(torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: _props(132))
    assert distributed.random_stream_fingerprint(torch.device("cuda", 0)) != cpu
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert distributed.random_stream_fingerprint(torch.device("cpu")) != cpu


def test_agreement_check_names_the_devices():
    desc, error = distributed._descriptor(torch.randn(3, 4), None, None, "assign", 2, None,
                                          "fp32", {}, torch.Generator().manual_seed(0))
    assert error is None
    table = torch.stack([desc, desc.clone()])
    distributed._check_agreement(table, None)  # identical ranks pass
    table[1, 7] += 1
    with pytest.raises(ValueError, match="^x: the ranks' devices draw different random streams"):
        distributed._check_agreement(table, None)
