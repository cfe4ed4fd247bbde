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
from diffx.quality.stats import reference_modality, registration_column, registration_pairs

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
    real_data: bool = True,
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
        if cfg.max_impulse_fraction is not None:
            out.append(
                _why(
                    E.ExpectColumnValuesToBeBetween(
                        column=f"{m}_impulse", max_value=cfg.max_impulse_fraction, mostly=histogram_mostly
                    ),
                    f"{m}: salt-and-pepper noise (isolated pixels far from their neighbours)",
                )
            )
    for column in histogram_columns:
        out.append(
            _why(
                E.ExpectColumnValuesToBeBetween(
                    column=column, max_value=cfg.max_hist_distance, mostly=histogram_mostly
                ),
                f"{column.removesuffix('_hist_distance')}: value distribution far from the real data's",
            )
        )
    if spec.layout_kind is not None:
        out.append(
            _true(
                "layout_ok",
                f"{spec.layout_kind} layout map missing, corrupt, of another frame size, or with labels outside "
                "layout_classes",
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
    if real_data:  # a generated row's id carries its source's, which may name the split it was planned from
        out.append(
            _why(
                E.ExpectColumnValuesToBeNull(column="id_names_split"),
                "the id names another split than the row's (a test row relabelled as train?); observed = that split",
            )
        )
    out += cross_modal_suite(spec, cfg, histogram_mostly, real_data)
    return out


def cross_modal_suite(
    spec: DatasetSpec, cfg: ImageGateConfig, mostly: float = 1.0, real_data: bool = True
) -> list[Expectation]:
    """Checks that compare modalities with each other and with the boxes (diffx/quality/consistency.py).

    Generated sets are not held to real box content: how well a model honours its layout is the generated
    gate's own ``honoured`` check, with its own share."""
    names = spec.modality_names
    reference = reference_modality(spec)
    out: list[Expectation] = []
    for a, b in registration_pairs(spec):
        out.append(
            _why(
                E.ExpectColumnValuesToBeBetween(
                    column=registration_column(spec, a, b), max_value=cfg.max_misregistration_px, mostly=mostly
                ),
                f"{b}: edges line up with {a}'s only after a shift (px): the frames are not registered",
            )
        )
        if a == reference:
            out.append(
                _why(
                    E.ExpectColumnValuesToBeBetween(
                        column=f"{b}_mirror_gain", max_value=cfg.max_mirror_gain, mostly=mostly
                    ),
                    f"{b}: fits a mirrored {reference} better than {reference} itself (one of them is flipped)",
                )
            )
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            out.append(
                _why(
                    E.ExpectColumnValuesToBeBetween(column=f"{a}_{b}_rank_corr", max_value=cfg.max_rank_corr),
                    f"{a} and {b} hold the same image (one modality's file copied into the other's slot)",
                )
            )
    for m in spec.modalities:
        if m.channels == 3:
            out.append(
                _why(
                    E.ExpectColumnValuesToBeBetween(
                        column=f"{m.name}_colour_outlier", max_value=cfg.max_colour_outlier
                    ),
                    f"{m.name}: red-blue balance outside the reference's 5-95% band by more than its width "
                    "(channels stored as BGR?)",
                )
            )
            if cfg.max_channel_swap is not None:
                out.append(
                    _why(
                        E.ExpectColumnValuesToBeBetween(
                            column=f"{m.name}_channel_swap", max_value=cfg.max_channel_swap, mostly=mostly
                        ),
                        f"{m.name}: the frame looks like the rest of the set only with red and blue exchanged "
                        "(stored as BGR)",
                    )
                )
    if real_data:
        out.append(
            _why(
                E.ExpectColumnValuesToBeBetween(column="box_content", min_value=cfg.min_box_content),
                "boxes do not stand out from their surroundings the way objects do in this data (moved off them?)",
            )
        )
    out += [
        _why(
            E.ExpectColumnValuesToBeBetween(column="duplicate_boxes", max_value=0),
            f"two boxes of one class overlap by IoU > {cfg.duplicate_box_iou} (one object labelled twice)",
        ),
        _why(
            E.ExpectColumnValuesToBeNull(column="cross_split_twin"),
            "a near-identical sample sits in another split (train/test leakage); observed = that sample's id",
        ),
    ]
    return out


def shard_suite() -> list[Expectation]:
    """Shard-level checks against the manifest; a check not reached (an earlier one failed) is null, so a
    report names the cause (say, the checksum) rather than every check after it."""
    return [
        _true("exists", "a shard listed in the manifest is missing"),
        _true("bytes_ok", "shard size differs from the manifest (truncated or altered)"),
        _true("sha256_ok", "shard checksum differs from the manifest"),
        _true("schema_ok", "shard schema differs from the manifest's dataset description"),
        _why(
            E.ExpectColumnPairValuesToBeEqual(
                column_A="rows_actual", column_B="rows_manifest", ignore_row_if="either_value_is_missing"
            ),
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
        _why(
            E.ExpectColumnValuesToBeBetween(column="tokens_per_word", max_value=cfg.max_tokens_per_word),
            "garbage text: the tokenizer splits its words into many pieces (not language it knows)",
        ),
        _why(
            E.ExpectColumnValuesToBeBetween(
                column="layout_conflicts", max_value=0, mostly=1.0 - cfg.max_conflict_share
            ),
            "the caption contradicts the layout: a class it lacks, a wrong count or side (another sample's caption?)",
        ),
    ]


def review_suite(cfg: CaptionGateConfig) -> list[Expectation]:
    return [
        _why(
            E.ExpectColumnValuesToBeBetween(column="pending_share", max_value=cfg.max_unresolved_share),
            "too many captions flagged by refine still wait for a human decision (reviews/queue.jsonl)",
        )
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
        _why(
            E.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="psnr", column_B="min_psnr_over_baseline", or_equal=True
            ),
            "reconstruction PSNR not above the latent-resolution baseline (the frame averaged down to the latent "
            "grid and back) by quality.vae.min_gain_over_baseline_db: the model adds nothing a blur does not",
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
    out = sample_suite(
        spec,
        cfg,
        max_objects,
        histogram_columns,
        histogram_mostly=1.0 - cfg.max_outlier_share,
        real_data=False,
    )
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
