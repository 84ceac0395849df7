"""`kasmina.determinism` on a GPU: repeated work is bitwise equal under `deterministic()`,
an operation with no deterministic CUDA kernel raises, and `settings` names the GPU.

Every test here needs CUDA and skips cleanly without it (CI has no GPU).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kasmina.determinism import deterministic, differences, settings

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def training_step(seed: int) -> list[torch.Tensor]:
    """A matmul, a convolution and a scatter-add with many collisions, forward and backward."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    a = torch.randn(512, 384, device="cuda", generator=g, requires_grad=True)
    b = torch.randn(384, 256, device="cuda", generator=g)
    image = torch.randn(8, 16, 32, 32, device="cuda", generator=g, requires_grad=True)
    kernel = torch.randn(32, 16, 3, 3, device="cuda", generator=g, requires_grad=True)
    index = torch.randint(0, 7, (20_000,), device="cuda", generator=g)
    source = torch.randn(20_000, 64, device="cuda", generator=g)
    summed = torch.zeros(7, 64, device="cuda").index_add_(0, index, source)
    product = a @ b
    features = F.conv2d(image, kernel, padding=1)
    (product.square().sum() + features.square().sum()).backward()
    assert a.grad is not None and image.grad is not None and kernel.grad is not None
    return [product, features, summed, a.grad, image.grad, kernel.grad]


def test_repeated_work_is_bitwise_equal_under_deterministic() -> None:
    with deterministic():
        first = training_step(3)
        for _ in range(3):
            again = training_step(3)
            assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))


def test_an_operation_with_no_deterministic_cuda_kernel_raises_inside_only() -> None:
    def pool_backward() -> None:
        x = torch.randn(2, 3, 9, 9, device="cuda", requires_grad=True)
        torch.nn.AdaptiveAvgPool2d(4)(x).sum().backward()

    with deterministic(), pytest.raises(RuntimeError, match="deterministic"):
        pool_backward()
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        pool_backward()
    finally:
        torch.use_deterministic_algorithms(was)


def test_settings_names_the_gpu_and_its_cuda_stack() -> None:
    with deterministic() as inside:
        assert inside["cudnn_deterministic"] is True and inside["cudnn_benchmark"] is False
    now = settings("cuda")
    assert now["device_name"] == torch.cuda.get_device_name(0)
    assert now["cuda"] == torch.version.cuda
    assert now["cudnn"] == torch.backends.cudnn.version()
    cpu = {**now, "device": "cpu"}
    assert differences(now, cpu) == [
        f"recorded on {now['device_name']} (CUDA {now['cuda']}, cuDNN {now['cudnn']}), "
        "re-executed on cpu"
    ]
