"""The dense layout measures: each is 1 (or its best) on a perfect match and clearly worse on a wrong one."""

from __future__ import annotations

import torch

from diffx.metrics.layout_agreement import ConfusionMatrix, edge_ssim, s_measure, saliency_scores, sobel_magnitude
from diffx.models.layout_net import LayoutNet


def _mask(top: int, left: int, size: int = 12, frame: int = 32) -> torch.Tensor:
    mask = torch.zeros(frame, frame)
    mask[top : top + size, left : left + size] = 1.0
    return mask


def test_mean_iou_counts_the_whole_set_and_skips_absent_classes() -> None:
    planned = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]])
    confusion = ConfusionMatrix(num_classes=4)
    confusion.update(planned, planned)
    assert confusion.mean_iou() == 1.0 and confusion.pixel_accuracy() == 1.0  # classes 2, 3: absent, not 0
    half = ConfusionMatrix(num_classes=2)
    half.update(torch.tensor([[0, 1, 1, 1]]), torch.tensor([[0, 0, 1, 1]]))
    assert half.mean_iou() == (1 / 2 + 2 / 3) / 2


def test_s_measure_is_one_for_the_truth_and_low_for_its_opposite_or_a_shifted_mask() -> None:
    truth = _mask(4, 6)
    assert abs(s_measure(truth, truth) - 1.0) < 1e-5
    assert s_measure(1 - truth, truth) < 0.1
    assert s_measure(_mask(16, 18), truth) < 0.6 < s_measure(_mask(5, 7), truth)
    assert s_measure(torch.zeros(8, 8), torch.zeros(8, 8)) == 1.0  # nothing salient, nothing predicted
    scores, mae = saliency_scores(truth[None, None], truth[None, None])
    assert abs(scores[0] - 1.0) < 1e-5 and mae == [0.0]


def test_edge_ssim_prefers_the_edges_of_the_image_itself() -> None:
    rgb = torch.zeros(2, 3, 32, 32)
    rgb[0, :, 8:20, 8:20] = 1.0
    rgb[1, :, 2:10, 18:30] = 1.0
    own = edge_ssim(rgb, sobel_magnitude(rgb))
    swapped = edge_ssim(rgb, sobel_magnitude(rgb.flip(0)))
    assert min(own) > 0.99 and max(swapped) < 0.5


def test_the_layout_net_keeps_the_frame_size_whatever_the_padding() -> None:
    net = LayoutNet(in_channels=4, outputs=3, width=8).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 4, 30, 44)).shape == (2, 3, 30, 44)
