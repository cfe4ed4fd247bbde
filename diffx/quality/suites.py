"""The expectation suites of every gate, versioned here in code and parameterised by params.yaml.

Each expectation carries ``meta.why``: the defect it exists to catch, printed next to a failure so the
reader knows what went wrong without reading great_expectations' internals.
"""

from __future__ import annotations

import re

import great_expectations as gx
from great_expectations.expectations import Expectation

from diffx.config import CaptionGateConfig, GeneratedGateConfig, ImageGateConfig, VaeGateConfig
from diffx.data.spec import DatasetSpec

E = gx.expectations


def _why(expectation: Expectation, why: str) -> Expectation:
    expectation.meta = {"why": why}
    return expectation


def _true(column: str, why: str) -> Expectation:
    return _why(E.ExpectColumnValuesToBeInSet(column=column, value_set=[True]), why)


def sample_suite(
    spec: DatasetSpec,
    cfg: ImageGateConfig,
    max_objects: int,
    histogram_columns: list[str],
    histogram_mostly: float = 1.0,
) -> list[Expectation]:
    """Per-sample checks on image content, alignment, boxes and identity.

    ``histogram_mostly`` < 1 lets a share of samples past the histogram bound: generated sets are judged as
    sets (a generative model draws some outliers); real data at ingest is held to every sample.
    """
    out: list[Expectation] = [
        _why(E.ExpectTableRowCountToBeBetween(min_value=cfg.min_rows), "the shard set is (nearly) empty"),
        _why(E.ExpectColumnValuesToNotBeNull(column="id"), "a row without an id"),
        _why(E.ExpectColumnValuesToBeUnique(column="id"), "duplicate sample ids"),
        _why(E.ExpectColumnValuesToBeUnique(column="content_hash"), "duplicate content (same pixels, other id)"),
        _why(E.ExpectColumnValuesToBeBetween(column="width", min_value=cfg.min_size), "frame too small"),
        _why(E.ExpectColumnValuesToBeBetween(column="height", min_value=cfg.min_size), "frame too small"),
    ]
    for modality in spec.modalities:
        m = modality.name
        out += [
            _true(f"{m}_decodable", f"{m}: image bytes missing, corrupt or truncated"),
            _true(f"{m}_size_ok", f"{m}: size differs from the sample's frame (modalities not aligned)"),
            _true(f"{m}_mode_ok", f"{m}: wrong channel count or bit depth for the modality"),
            _why(
                E.ExpectColumnValuesToBeBetween(column=f"{m}_std", min_value=cfg.min_std),
                f"{m}: blank or constant image",
            ),
            _why(
                E.ExpectColumnValuesToBeBetween(column=f"{m}_nonzero", min_value=cfg.min_nonzero_fraction),
                f"{m}: (almost) all zeros, e.g. a failed depth capture",
            ),
        ]
    for column in histogram_columns:
        out.append(
            _why(
                E.ExpectColumnValuesToBeBetween(
                    column=column, max_value=cfg.max_hist_distance, mostly=histogram_mostly
                ),
                f"{column.removesuffix('_hist_distance')}: value distribution far from the real data's",
            )
        )
    out += [
        _true("boxes_finite", "box coordinates NaN or infinite"),
        _true("boxes_ordered", "inverted or zero-area box (needs x_min < x_max, y_min < y_max)"),
        _true("boxes_inside", "box outside the image"),
        _true("classes_known", "object class not in the class list, or a wrong category_id"),
        _why(
            E.ExpectColumnValuesToBeBetween(column="n_objects", min_value=0, max_value=max_objects),
            "more objects than the layout has slots",
        ),
        _why(
            E.ExpectColumnValuesToBeBetween(column="min_box_area", min_value=cfg.min_box_area),
            "box smaller than min_box_area px^2 (label noise)",
        ),
        _why(
            E.ExpectColumnValuesToBeBetween(column="max_box_aspect", max_value=cfg.max_box_aspect),
            "box with an extreme aspect ratio",
        ),
    ]
    return out


def shard_suite() -> list[Expectation]:
    """Shard-level checks against the manifest."""
    return [
        _true("exists", "a shard listed in the manifest is missing"),
        _true("bytes_ok", "shard size differs from the manifest (truncated or altered)"),
        _true("sha256_ok", "shard checksum differs from the manifest"),
        _true("schema_ok", "shard schema differs from the manifest's dataset description"),
        _why(
            E.ExpectColumnPairValuesToBeEqual(column_A="rows_actual", column_B="rows_manifest"),
            "row count differs from the manifest",
        ),
    ]


def _source_regex(sources: list[str]) -> str:
    return "^(?:" + "|".join(re.escape(s).replace(r"\*", ".+") for s in sources) + ")$"


def caption_suite(cfg: CaptionGateConfig, max_tokens: int) -> list[Expectation]:
    return [
        _true("caption_present", "sample without a caption"),
        _why(E.ExpectColumnValuesToBeInSet(column="caption_blank", value_set=[False]), "empty or blank caption"),
        _why(
            E.ExpectColumnValuesToBeBetween(column="caption_tokens", min_value=cfg.min_tokens),
            "caption too short to describe the scene",
        ),
        _why(
            E.ExpectColumnValuesToBeBetween(column="caption_tokens", max_value=max_tokens),
            "caption longer than the text encoder's context (it would be truncated)",
        ),
        _why(
            E.ExpectColumnValuesToMatchRegex(column="caption_source", regex=_source_regex(cfg.sources)),
            "caption_source does not say which backend wrote the caption",
        ),
    ]


def vae_suite() -> list[Expectation]:
    """Over one row per modality: observed PSNR/SSIM and the floors they must reach."""
    return [
        _why(
            E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="psnr", column_B="min_psnr", or_equal=True),
            "reconstruction PSNR below the floor for this modality",
        ),
        _why(
            E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="ssim", column_B="min_ssim", or_equal=True),
            "reconstruction SSIM below the floor",
        ),
        _why(E.ExpectColumnValuesToNotBeNull(column="psnr"), "a modality without a PSNR"),
    ]


def vae_floors(cfg: VaeGateConfig, modality: str) -> tuple[float, float]:
    return cfg.min_psnr.get(modality, cfg.default_min_psnr), cfg.min_ssim


def generated_suite(
    spec: DatasetSpec,
    cfg: GeneratedGateConfig,
    max_objects: int,
    histogram_columns: list[str],
    real_means: dict[str, float],
    contrast_columns: list[str],
) -> list[Expectation]:
    """The per-sample image checks, plus: modality means near the real data's, and the layout honoured."""
    out = sample_suite(spec, cfg, max_objects, histogram_columns, histogram_mostly=1.0 - cfg.max_outlier_share)
    for name, mean in sorted(real_means.items()):
        out.append(
            _why(
                E.ExpectColumnMeanToBeBetween(
                    column=f"{name}_mean", min_value=mean - cfg.max_mean_shift, max_value=mean + cfg.max_mean_shift
                ),
                f"{name}: the generated set's mean level is far from the real data's",
            )
        )
    for column in contrast_columns:
        name = column.removesuffix("_box_contrast")
        sign = cfg.honoured[name]
        bound = {"min_value": cfg.min_contrast} if sign == "positive" else {"max_value": -cfg.min_contrast}
        out.append(
            _why(
                E.ExpectColumnValuesToBeBetween(column=column, mostly=cfg.min_honoured_share, **bound),
                f"{name}: too few samples show their objects where the layout put them",
            )
        )
    return out
