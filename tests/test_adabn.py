"""AdaBN: after the hook each BatchNorm layer's running statistics are those of its inputs on the target images."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from cdkd_bench.testing import TinyNet, check_method, kit_method_info
from cdkd_plugins.adaptation.adabn import AdaBN, equal_batches, reestimate_batchnorm

STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def source_trained(net: nn.Module, seed: int = 0) -> nn.Module:
    """``net`` with running statistics from a few 'source' batches (shifted and scaled), far from the target's."""
    g = torch.Generator().manual_seed(seed)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(3.0 + 2.0 * torch.randn(8, 3, 16, 16, generator=g))
    return net


def target_images(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g) * torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1, 1) - 1.0


def channel_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and unbiased variance of an (N, C) or (N, C, H, W) array."""
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    return x.mean(axis=axes), x.var(axis=axes, ddof=1)


def test_every_layer_holds_the_mean_and_unbiased_variance_of_its_inputs_on_the_target_images() -> None:
    torch.manual_seed(0)
    net = source_trained(TinyNet(4, (4, 6, 8), (1, 2, 2)))
    images = target_images(10)
    seen: dict[str, np.ndarray] = {}
    layers = {name: m for name, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)}
    hooks = [m.register_forward_hook(lambda _m, inputs, _out, name=name: seen.__setitem__(name, inputs[0].double().numpy()))
             for name, m in layers.items()]
    AdaBN(AdaBN.Hparams(batch_size=256), kit_method_info()).before_evaluation(net, images)  # one batch of all 10 images
    for hook in hooks:
        hook.remove()
    assert set(seen) == set(layers) == {"stages.0.1", "stages.1.1", "stages.2.1"}
    assert seen["stages.0.1"].shape[0] == 10
    for name, layer in layers.items():
        mean, var = channel_statistics(seen[name])
        np.testing.assert_allclose(layer.running_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.running_var.numpy(), var, rtol=1e-5, atol=1e-6)
        assert layer.num_batches_tracked.item() == 1
        assert layer.momentum == 0.1  # restored
    assert not net.training and not any(m.training for m in net.modules())


def input_bn_net(dropout: float = 0.0) -> nn.Module:
    """BatchNorm directly on the images (after a dropout that must stay off), then a small convolutional classifier."""
    return nn.Sequential(nn.Dropout(dropout), nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))


@pytest.mark.parametrize(("count", "batch_size"), [(12, 256), (12, 4), (12, 6)])
def test_a_layer_on_the_images_gets_their_channel_mean_however_they_are_batched(count: int, batch_size: int) -> None:
    torch.manual_seed(0)
    net = source_trained(input_bn_net(dropout=0.5))
    images = target_images(count)
    reestimate_batchnorm(net, images, batch_size)
    mean, var = channel_statistics(images.double().numpy())
    bn = net[1]
    np.testing.assert_allclose(bn.running_mean.numpy(), mean, rtol=1e-5, atol=1e-6)  # equal batches: the mean of means is the mean
    assert bn.num_batches_tracked.item() == -(-count // batch_size)
    if batch_size >= count:
        np.testing.assert_allclose(bn.running_var.numpy(), var, rtol=1e-5, atol=1e-6)
    else:  # the average within-batch variance: close to, and never far above, the overall one
        assert np.all(bn.running_var.numpy() < var * 1.5) and np.all(bn.running_var.numpy() > var * 0.5)


def test_only_batchnorm_running_statistics_change() -> None:
    torch.manual_seed(0)
    net = source_trained(TinyNet(4, (4, 6, 8), (1, 2, 2)))
    before = copy.deepcopy(net.state_dict())
    AdaBN(AdaBN.Hparams(), kit_method_info()).before_evaluation(net, target_images(20))
    after = net.state_dict()
    assert set(after) == set(before)
    for name, value in after.items():
        if name.rsplit(".", 1)[-1] in STATISTICS:
            assert not torch.equal(value, before[name]), f"{name} was not re-estimated"
        else:
            assert torch.equal(value, before[name]), f"{name} changed"
    assert all(p.grad is None for p in net.parameters())


def test_a_network_without_batchnorm_is_untouched() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 2)).train()
    before = copy.deepcopy(net.state_dict())
    AdaBN(AdaBN.Hparams(), kit_method_info()).before_evaluation(net, target_images(5))
    assert all(torch.equal(value, before[name]) for name, value in net.state_dict().items())
    assert not net.training


def test_layers_without_running_statistics_are_skipped_and_a_cumulative_momentum_is_kept() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False), nn.BatchNorm2d(3, momentum=None))
    reestimate_batchnorm(net, target_images(6), 4)
    assert net[0].running_mean is None and net[1].momentum is None
    mean, _ = channel_statistics(target_images(6).double().numpy())
    np.testing.assert_allclose(net[1].running_mean.numpy(), np.zeros(3), atol=1e-6)  # the first layer normalises each batch
    assert not np.allclose(mean, 0.0, atol=1e-2)


def test_a_linear_network_with_batchnorm1d_is_re_estimated_too() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(3 * 16 * 16), nn.Linear(3 * 16 * 16, 2))
    images = target_images(9)
    reestimate_batchnorm(net, images, 512)
    mean, var = channel_statistics(images.flatten(1).double().numpy())
    np.testing.assert_allclose(net[1].running_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net[1].running_var.numpy(), var, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("count", "batch_size"), [(10, 4), (12, 4), (1797, 256), (5, 256), (0, 8)])
def test_batches_cover_every_image_once_in_near_equal_sizes(count: int, batch_size: int) -> None:
    chunks = equal_batches(count, batch_size)
    sizes = [len(c) for c in chunks]
    assert len(chunks) == -(-count // batch_size)
    assert all(s <= batch_size for s in sizes) and (not sizes or max(sizes) - min(sizes) <= 1)
    assert sorted(torch.cat(chunks).tolist() if chunks else []) == list(range(count))
    assert all(torch.equal(a, b) for a, b in zip(chunks, equal_batches(count, batch_size), strict=True))  # a fixed order


def test_declarations_and_no_loss() -> None:
    assert AdaBN.family == "adaptation" and not AdaBN.uses_target and not AdaBN.needs_teacher and not AdaBN.owns_step
    assert AdaBN.Hparams().batch_size == 256
    assert AdaBN(AdaBN.Hparams(), kit_method_info()).loss(None) == {}  # type: ignore[arg-type]


def test_conforms_to_the_contract() -> None:
    assert check_method(AdaBN) == {}


@pytest.mark.parametrize("bad", [0, 1, -4])
def test_rejects_invalid_hparams(bad: int) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        AdaBN.Hparams(batch_size=bad)
