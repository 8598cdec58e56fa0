"""Pretrained networks on the engine's [-1, 1] inputs: :class:`NormalisedInput`, local weights files and the host's path to them."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

import cdkd_plugins.architectures.small_resnets  # noqa: F401 - registers the 32px ResNets with timm
from cdkd_bench import UserError
from cdkd_bench.networks import NormalisedInput, forward_outputs, input_statistics, with_input_statistics
from cdkd_bench.plugins import Host
from cdkd_bench.weights import load_weights, planned_weights, weights_hash

MEAN = (0.2, 0.5, 0.7)
STD = (0.3, 0.25, 0.4)
CLOSE = {"atol": 1e-4, "rtol": 1e-4}


def inputs(n: int = 2, side: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, side, side, generator=g) * 2 - 1


def renormalised(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    return ((x + 1) / 2 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """These 32px networks gain nothing from threads; on a busy two-core machine OpenMP's waiting makes each pass ~50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet10t", num_classes=5).eval()


# --- NormalisedInput ------------------------------------------------------------------------


def test_every_entry_point_renormalises_the_input(net: nn.Module) -> None:
    wrapper = NormalisedInput(net, MEAN, STD).eval()
    x = inputs()
    seen = renormalised(x, MEAN, STD)
    with torch.no_grad():
        torch.testing.assert_close(wrapper.normalise(x), seen, **CLOSE)
        torch.testing.assert_close(wrapper(x), net(seen), **CLOSE)
        torch.testing.assert_close(wrapper.forward_features(x), net.forward_features(seen), **CLOSE)
        final, maps = wrapper.forward_intermediates(x, indices=[1, 3], output_fmt="NCHW")
        want_final, want_maps = net.forward_intermediates(seen, indices=[1, 3], output_fmt="NCHW")
        torch.testing.assert_close(final, want_final, **CLOSE)
        assert len(maps) == len(want_maps) == 2
        for got, want in zip(maps, want_maps, strict=True):
            torch.testing.assert_close(got, want, **CLOSE)
        features = net.forward_features(seen)
        torch.testing.assert_close(wrapper.forward_head(features, pre_logits=True), net.forward_head(features, pre_logits=True))


def test_the_engine_reads_a_wrapped_network_as_the_bare_one(net: nn.Module) -> None:
    wrapper = NormalisedInput(net, MEAN, STD).eval()
    x = inputs()
    with torch.no_grad():
        got = forward_outputs(wrapper, x, stages=(1, -1))
        want = forward_outputs(net, renormalised(x, MEAN, STD), stages=(1, -1))
    assert got.num_stages == want.num_stages == len(net.feature_info)
    torch.testing.assert_close(got.logits, want.logits, **CLOSE)
    torch.testing.assert_close(got.features, want.features, **CLOSE)
    assert got.intermediates.keys() == want.intermediates.keys()
    for stage in want.intermediates:
        torch.testing.assert_close(got.intermediates[stage], want.intermediates[stage], **CLOSE)


def test_the_state_dict_is_the_wrapped_networks_alone(net: nn.Module) -> None:
    wrapper = NormalisedInput(net, MEAN, STD)
    state, own = wrapper.state_dict(), net.state_dict()
    assert set(state) == {f"net.{k}" for k in own}
    assert not any("scale" in k or "shift" in k for k in state)
    for key, value in own.items():
        assert torch.equal(state[f"net.{key}"], value), key


def test_everything_else_is_the_wrapped_networks(net: nn.Module) -> None:
    wrapper = NormalisedInput(net, MEAN, STD)
    assert wrapper.get_classifier() is net.get_classifier() is net.fc
    assert wrapper.feature_info is net.feature_info
    assert wrapper.num_features == net.num_features == 512
    assert wrapper.num_classes == 5
    assert wrapper.pretrained_cfg is net.pretrained_cfg
    with pytest.raises(AttributeError):
        _ = wrapper.no_such_attribute


def test_input_statistics_are_timms_pretrained_config(net: nn.Module) -> None:
    resnet18 = timm.create_model("resnet18", pretrained=False, num_classes=3)
    assert input_statistics(resnet18) == (tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD))
    bare = timm.create_model("resnet10_w8_32px", num_classes=3)
    bare.pretrained_cfg = None  # a network that says nothing gets ImageNet's
    assert input_statistics(bare) == (tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD))


def test_with_input_statistics_wraps_only_networks_that_expect_other_inputs() -> None:
    half = timm.create_model("resnet10t", num_classes=3)
    half.pretrained_cfg = {**half.pretrained_cfg, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    assert with_input_statistics(half) is half

    resnet18 = timm.create_model("resnet18", pretrained=False, num_classes=3)
    wrapped = with_input_statistics(resnet18)
    assert isinstance(wrapped, NormalisedInput) and wrapped.net is resnet18
    x = inputs(1)
    torch.testing.assert_close(wrapped.normalise(x), renormalised(x, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD), **CLOSE)


# --- weights files --------------------------------------------------------------------------


def distinctive_state(arch: str, num_classes: int) -> dict[str, torch.Tensor]:
    """A state dict of ``arch`` whose every tensor (buffers too) differs from a fresh model's."""
    g = torch.Generator().manual_seed(9)
    state = timm.create_model(arch, num_classes=num_classes).state_dict()
    return {k: (torch.rand(v.shape, generator=g) + 0.5) if v.is_floating_point() else v + 3 for k, v in state.items()}


def assert_holds(model: nn.Module, state: dict[str, torch.Tensor], except_prefix: str = "\0") -> None:
    own = model.state_dict()
    for key, value in own.items():
        if not key.startswith(except_prefix):
            assert torch.equal(value, state[key]), key


def test_imagenet_weights_load_into_a_model_of_other_classes(tmp_path: Path) -> None:
    state = distinctive_state("resnet10_w8_32px", 1000)
    path = tmp_path / "imagenet.pth"
    torch.save(state, path)
    model = timm.create_model("resnet10_w8_32px", num_classes=31)
    head = {k: v.clone() for k, v in model.fc.state_dict().items()}
    load_weights(model, path, "resnet10_w8_32px")
    for key, value in model.fc.state_dict().items():
        assert torch.equal(value, head[key]), f"the classifier's {key} changed"
    assert model.fc.weight.shape == (31, 64)
    assert_holds(model, state, except_prefix="fc.")


@pytest.mark.parametrize("wrap", ["state_dict", "module.", "state_dict + module."])
def test_checkpoint_wrappers_and_data_parallel_prefixes_load(tmp_path: Path, wrap: str) -> None:
    state = distinctive_state("resnet10_w8_32px", 10)
    saved: dict[str, object] = {f"module.{k}": v for k, v in state.items()} if "module." in wrap else dict(state)
    if "state_dict" in wrap:
        saved = {"state_dict": saved, "epoch": 90}
    path = tmp_path / "checkpoint.pth"
    torch.save(saved, path)
    model = timm.create_model("resnet10_w8_32px", num_classes=10)
    load_weights(model, path, "resnet10_w8_32px")
    assert_holds(model, state)  # the classifier fits here, so it loads too


@pytest.mark.parametrize(("file_arch", "model_arch"), [
    ("resnet10_w16_32px", "resnet10_w8_32px"),   # same names, other shapes
    ("resnet18_w16_32px", "resnet10_w16_32px"),  # extra blocks
    ("resnet10_w16_32px", "resnet18_w16_32px"),  # missing blocks
])
def test_weights_of_another_architecture_are_refused(tmp_path: Path, file_arch: str, model_arch: str) -> None:
    path = tmp_path / f"{file_arch}.pth"
    torch.save(timm.create_model(file_arch, num_classes=10).state_dict(), path)
    with pytest.raises(UserError, match=re.escape(str(path))) as raised:
        load_weights(timm.create_model(model_arch, num_classes=10), path, model_arch)
    assert model_arch in str(raised.value)


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    model = timm.create_model("resnet10_w8_32px", num_classes=10)
    with pytest.raises(UserError, match=re.escape(str(text))):
        load_weights(model, text, "resnet10_w8_32px")
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], listing)
    with pytest.raises(UserError, match=re.escape(str(listing))):
        load_weights(model, listing, "resnet10_w8_32px")


def test_the_hash_follows_the_bytes_not_the_place(tmp_path: Path) -> None:
    path = tmp_path / "a" / "weights.pth"
    path.parent.mkdir()
    torch.save({"w": torch.arange(1000.0)}, path)
    original = weights_hash(path)
    copy = tmp_path / "b" / "renamed.bin"
    copy.parent.mkdir()
    shutil.copy(path, copy)
    assert weights_hash(copy) == original
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    copy.write_bytes(bytes(data))
    assert weights_hash(copy) != original
    with pytest.raises(UserError, match="cannot read"):
        weights_hash(tmp_path / "missing.pth")


def test_planned_weights(tmp_path: Path) -> None:
    flag = "--teacher-weights"
    assert planned_weights(None, "", flag) is None
    path = tmp_path / "w.pth"
    torch.save({"w": torch.ones(3)}, path)
    assert planned_weights(path, "", flag) is None  # the run was planned without weights
    with pytest.raises(UserError, match=re.escape(flag)):
        planned_weights(None, "abc", flag)
    digest = weights_hash(path)
    assert planned_weights(path, digest, flag) == path
    other = "0" * len(digest) if digest != "0" * len(digest) else "1" * len(digest)
    with pytest.raises(UserError, match=re.escape(flag)) as raised:
        planned_weights(path, other, flag)
    assert str(path) in str(raised.value)


# --- the host's architecture path -----------------------------------------------------------


def test_the_host_wraps_a_network_loaded_from_a_local_file(host: Host, tmp_path: Path) -> None:
    state = distinctive_state("resnet10_w16_32px", 10)
    path = tmp_path / "teacher.pth"
    torch.save(state, path)
    model = host.architecture("resnet10_w16_32px", 10, True, weights=path)
    assert isinstance(model, NormalisedInput)
    assert_holds(model.net, state)
    assert set(model.state_dict()) == {f"net.{k}" for k in state}
    x = inputs()
    model.eval()
    assert getattr(model.net, "pretrained_cfg", None) is None  # the 32px ResNets name no statistics: ImageNet's apply
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.net(renormalised(x, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)), **CLOSE)


def test_the_host_returns_the_bare_network_when_not_pretrained(host: Host) -> None:
    model = host.architecture("resnet10_w16_32px", 10)
    assert not isinstance(model, NormalisedInput)
    assert isinstance(model, timm.models.ResNet)
    assert model.get_classifier().out_features == 10
