"""The report's sections on the generator: the depth heads' accuracy (``train_heads``), the
samples' guidance losses (``synthesize``) and dFID / FID / consistency (``dfid``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dag_core.errors import DagError
from dag_core.results.markdown import (
    Record,
    counts_text,
    difference,
    interval,
    num,
    plots_note,
    require,
    table,
)

# --- heads -----------------------------------------------------------------------------------


def heads_section(record: Record) -> str:
    """The depth heads' held-out accuracy (``metrics/heads.json`` of stage ``train_heads``)."""
    h = record.data
    require(h, ("t", "strong", "weak", "mean_depth_baseline", "n_train", "n_heldout"), record.path)
    rows = [
        ("MLP-S (strong blocks S)", h["strong"]),
        ("MLP-W (weak blocks W)", h["weak"]),
        ("mean-depth baseline", h["mean_depth_baseline"]),
    ]
    low = h.get("at_head_resolution")
    if low:
        r = low["resolution"]
        rows += [
            (f"MLP-S evaluated at {r}²", low["strong"]),
            (f"MLP-W evaluated at {r}²", low["weak"]),
        ]
    body = table(
        ["predictor", "AbsRel ↓", "δ<1.25 ↑"],
        [(name, num(m["abs_rel"], 3), num(m["delta1"], 3)) for name, m in rows],
        "lrr",
    )
    return (
        f"## Depth heads (`{record.path}`)\n\n"
        "MLP-S and MLP-W read the frozen U-Net's decoder features of a noised image and predict "
        f"its depth map (paper §3.1). Held-out accuracy at t = {h['t']} on the "
        f"{h['n_heldout']} held-out labelled pairs (the heads were trained on {h['n_train']}): "
        "AbsRel is the mean of |d − d*| / d* (lower is better), δ<1.25 the share of pixels "
        "within 25 % of the true depth (higher is better). The mean-depth baseline predicts the "
        "training pairs' mean depth everywhere; a head must beat it. One training run, no CI."
        + (
            " The rows at r² evaluate the same heads on features resized to r² and upsample "
            "their depth back (`runtime.head_resolution`, the guidance lever)."
            if low
            else ""
        )
        + "\n\n"
        + body
        + plots_note(record)
    )


# --- synthesis -------------------------------------------------------------------------------


def synthesis_section(record: Record) -> str:
    """Guidance losses of the finished samples (``metrics/synthesis.json`` of ``synthesize``):
    one row per variant (an entry with ``L_dc``; other entries are not variants)."""
    rows = []
    for name, row in record.data.items():
        if not (isinstance(row, Mapping) and "L_dc" in row):
            continue
        require(row, ("n",), f"{record.path} variant {name}")
        l_dp = num(row["L_dp"], 4) if "L_dp" in row else "—"
        rows.append((name, str(row["n"]), num(row["L_dc"], 4), l_dp))
    if not rows:
        raise DagError(f"{record.path} holds no variant with L_dc")
    return (
        f"## Guidance losses of the samples (`{record.path}`)\n\n"
        "For the first samples of each variant (same seeds in every variant), the two guidance "
        "losses evaluated on the finished images at t = 0, as per-pixel means in normalised "
        "depth: L_dc, how far MLP-W's depth is from MLP-S's, and L_dp, the depth prior's "
        "denoising loss on MLP-S's depth (τ = 100, the same noise for every variant). Lower "
        "means depth labels the heads agree on and the prior finds plausible. A diagnostic of "
        "what guidance changed, without CIs: the effects are measured in the sections below.\n\n"
        + table(["variant", "samples", "L_dc", "L_dp"], rows, "lrrr")
        + plots_note(record)
    )


# --- dFID ------------------------------------------------------------------------------------


def _dfid_cells(row: Mapping[str, Any]) -> list[str]:
    return [
        str(row["n"]),
        interval(row, "dfid", 1),
        interval(row, "fid", 1),
        f"{num(row['kid_mean'], 3)} ± {num(row['kid_std'], 3)}" if "kid_std" in row else "—",
        f"{num(row['precision'], 2)} / {num(row['recall'], 2)}" if "recall" in row else "—",
        interval(row, "consistency_abs_rel", 3),
        interval(row, "consistency_delta1", 3),
    ]


def dfid_section(record: Record) -> str:
    """dFID, FID, KID, P/R and consistency per variant, their paired differences to the
    reference variant and the headroom above the real floor (``metrics/dfid.json``)."""
    d = record.data
    require(d, ("variants", "n_real", "n_boot", "confidence"), record.path)
    ref = d.get("reference_variant")
    paired = d.get(f"vs_{ref}") if ref else None
    floor = d.get("floor")
    headroom = d.get("headroom")
    conf = round(100 * float(d["confidence"]))
    sizes = sorted({int(row["n"]) for row in d["variants"].values()})
    text = (
        f"## dFID, FID and image–label consistency (`{record.path}`)\n\n"
        "dFID (paper §5) is the FID between depth maps that one reference depth estimator "
        "predicts from generated images and from real ones: lower means more realistic scene "
        f"geometry. FID is the same distance on the images. Both compare {counts_text(sizes)} "
        f"generated samples per variant with {d['n_real']} held-out real images, on "
        f"Inception-v3 features (`{d.get('extractor', '?')}`). KID is mean ± SD over subsets; "
        "P / R are the image features' precision and recall. Consistency is AbsRel / δ<1.25 "
        "between each sample's stored depth label (MLP-S) and the reference estimator's depth "
        "of its image: does the label describe the image? Every interval is a "
        f"{conf} % bootstrap CI over the generated samples ({d['n_boot']} resamples, the real "
        "set fixed)."
    )
    if floor:
        text += (
            f" The floor row scores {floor['n']} further held-out real pairs "
            f"(`{floor.get('data', '?')}`) the same way: what real images reach at this count."
        )
    nonfinite = {
        k: r["labels_nonfinite"] for k, r in d["variants"].items() if r.get("labels_nonfinite")
    }
    if nonfinite:
        listed = ", ".join(f"{k}: {v}" for k, v in nonfinite.items())
        text += f" Depth labels that came out non-finite (scored as the maximum depth): {listed}."
    rows = [[name, *_dfid_cells(row)] for name, row in d["variants"].items()]
    if floor:
        rows.append(["*held-out real pairs (floor)*", *_dfid_cells(floor)])
    header = ["variant", "n", "dFID ↓", "FID ↓", "KID ↓", "P / R ↑", "consistency AbsRel ↓"]
    text += "\n\n" + table([*header, "consistency δ<1.25 ↑"], rows, "lr")
    if paired:
        text += (
            f"\n### Paired differences vs {ref}\n\n"
            f"Variant − {ref} on the same seeds (sample i of every variant starts from the same "
            "noise), the same resampled indices for both: the CI of the difference itself. "
            '"lower" / "higher" when it excludes 0, else "no difference"; the relative '
            "change is the difference over the reference's value.\n\n"
        )
        keys = ("dfid", "fid", "consistency_abs_rel", "consistency_delta1")
        digits = {"dfid": 1, "fid": 1}
        text += table(
            ["variant", "dFID", "FID", "consistency AbsRel", "consistency δ<1.25"],
            [
                [
                    f"{name} − {ref}",
                    *(difference(row, k, digits.get(k, 3), rel=k in digits) for k in keys),
                ]
                for name, row in paired.items()
            ],
        )
    if headroom:
        text += (
            "\n### Headroom above the floor\n\n"
            "Each variant's gap above the held-out real pairs (the sets share nothing, so the CI "
            "resamples both): the most any guidance could lower dFID or FID at this count. "
            "gap / dFID is the relative reduction that would make the samples score like real "
            "images.\n\n"
        )
        text += table(
            ["variant", "dFID gap", "dFID gap / dFID", "FID gap"],
            [
                [
                    name,
                    interval(row, "dfid_gap", 1, signed=True),
                    _percent_interval(row, "dfid_gap_rel"),
                    interval(row, "fid_gap", 1, signed=True),
                ]
                for name, row in headroom.items()
            ],
        )
    return text + plots_note(record)


def _percent_interval(row: Mapping[str, Any], key: str) -> str:
    v, lo, hi = (100 * float(row[k]) for k in (key, f"{key}_ci_lo", f"{key}_ci_hi"))
    return f"{v:.1f} % [{lo:.1f}, {hi:.1f}]"
