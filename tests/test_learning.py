"""Slow end-to-end check that training actually learns (run with `pytest -m slow`)."""

from __future__ import annotations

import pytest

import ganforge
from ganforge.data.toy import mixture_modes
from ganforge.metrics import mixture_mode_stats


@pytest.mark.slow
def test_ring8_preset_learns_the_ring(cli, tmp_path):
    """3,000 steps of the ring8 preset (about 20 s on one CPU core) put the samples on the ring, near the modes."""
    run = tmp_path / "ring8"
    result = cli("train", "--data", "ring8", "--steps", "3000", "--out", run, "--device", "cpu", "--quiet",
                 "--sample_every", "3000", "--log_every", "500")
    assert result.code == 0, result.err
    samples = ganforge.load_generator(run).sample(2500, seed=0)
    radius = samples.norm(dim=1)
    assert 0.75 < radius.median().item() < 1.25, "samples lie on the unit ring"
    modes, _ = mixture_modes("ring8")
    # Judged at 10x the data's std: the short run has found the modes, not yet their exact width.
    stats = mixture_mode_stats(samples, modes, std=0.1)
    assert stats["modes"] >= 7 and stats["hq_percent"] > 80, stats
