"""What the dataset cards of this pipeline's datasets say (:class:`~dag_core.shards.card.CardInfo`).

One builder per kind of dataset the stages write: the synthetic variants of depth-aware guided
sampling (DAG, Kim et al., arXiv 2212.08861), the labelled subset that trains the depth heads,
and the reference splits (the real image set for FID / dFID and the held-out depth test split).
The card's body adds what the rows record themselves (model hashes, guidance, seeds).
"""

from __future__ import annotations

from typing import Any

from dag_core.shards.card import CardInfo

PAPER = (
    "Kim et al., *DAG: Depth-Aware Guidance with Denoising Diffusion Probabilistic Models*, "
    "arXiv 2212.08861"
)


def synthetic_card(
    variant: str,
    *,
    license: str,
    base_model: str,
    heads: str,
    prior: str | None,
    num_samples: int,
    quality: list[str] | None = None,
) -> CardInfo:
    """The card of synthetic variant ``variant`` (its rows record guidance, sampler, hashes)."""
    guided = variant != "unguided"
    return CardInfo(
        title=f"DAG synthetic image–depth pairs: {variant}",
        summary=(
            f"{num_samples} images sampled from a DDPM "
            + ("with depth-aware guidance" if guided else "without guidance (the paired baseline)")
            + f" ({PAPER}), each labelled with the depth its strong depth head predicts from "
            "the U-Net's features, and that label's uncertainty. Every variant of a run uses "
            "the same seeds, so variants compare pair by pair."
        ),
        license=license,
        made={"base model": base_model, "depth heads": heads, "depth prior": prior or "none"},
        quality=tuple(quality or ()),
        limits=(
            "Depth is a prediction of the depth heads (trained on a small labelled subset), not a "
            "measurement; its scale is the heads' metric scale.",
            "dFID / FID and the consistency differences between variants (with their CIs) are "
            "measured after this dataset is written, by stage `dfid` (`metrics/dfid.json`, "
            "`reports/results.md`).",
            "Samples are as good as the base model: the embedded default is a 32² DDPM of a "
            "procedural world, a test bed for the pipeline, not real scenes.",
        ),
    )


def labelled_card(
    split: str, *, license: str, source: str, path: str | None, seed: int, resolution: int
) -> CardInfo:
    """The card of the labelled subset's ``split`` (``train`` or ``heldout``)."""
    what = {"train": "train the depth heads", "heldout": "probe the heads' accuracy"}
    return CardInfo(
        title=f"Labelled image–depth pairs: {split} ({source})",
        summary=(
            f"The few measured image–depth pairs that {what.get(split, 'label')} of depth-aware "
            f"guidance ({PAPER}), picked deterministically (seed {seed}) from `{source}`"
            + (f" (`{path}`)" if path else "")
            + f" at {resolution}² pixels."
        ),
        license=license,
        made={"source": source, "path": path or "-", "split seed": seed, "resolution": resolution},
        quality=("depth is the source's own measurement or render (no label uncertainty)",),
        limits=(
            "A small subset by design (the paper labels ~100 pairs); `world` is a procedural "
            "renderer, not real scenes.",
            "The source's own licence terms apply (NYU Depth v2 for `nyu`).",
        ),
    )


def reference_card(split: str, *, license: str, resolution: int, rows: dict[str, Any]) -> CardInfo:
    """The card of reference split ``split`` of the procedural world (``rows``: each split's
    size, for the summary)."""
    role = {
        "train": "train the reference depth estimator that scores dFID",
        "test": "be the real image set of FID / dFID and the held-out depth test split",
        "floor": "give the FID / dFID floor: a real set of the generated sets' size",
    }
    return CardInfo(
        title=f"Procedural world reference pairs: {split}",
        summary=(
            f"Image–depth pairs rendered by the procedural world at {resolution}² pixels to "
            f"{role.get(split, 'evaluate')} ({PAPER}); seeds disjoint from the labelled subset's "
            f"and from the other splits ({', '.join(f'{k} {v}' for k, v in rows.items())})."
        ),
        license=license,
        made={"source": "world (dag_core.world)", "resolution": resolution},
        quality=("depth is the renderer's exact depth (no label uncertainty)",),
        limits=("Procedural scenes: a test bed for the pipeline, not real images.",),
    )
