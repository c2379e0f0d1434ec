"""Training the depth heads on a frozen U-Net (paper, "Label-efficient training of depth
predictors").

:func:`train_heads` keeps the U-Net frozen and computes features on the fly for each batch of
noisy images x_t ~ q(x_t | x_0) with t uniform; nothing is cached, and memory is bounded by
regressing only ``pixels_per_image`` randomly chosen valid pixels per image, sampled directly from
the low-resolution feature maps (:func:`dag_core.features.sample_pixels`). The loss is L1 in the
normalised depth space. :func:`fit_pixel_heads` is the loop itself, for any set of heads (the
probes of :mod:`dag_core.probe` use it too); :func:`random_batches` a seeded minibatch sampler.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from diffusers import UNet2DModel
from torch import Tensor

from dag_core.configs.heads import HeadConfig
from dag_core.depthnorm import DepthNorm
from dag_core.errors import DagError
from dag_core.features import (
    FeatureExtractor,
    check_blocks,
    decoder_layers,
    noise_images,
    sample_pixels,
)
from dag_core.heads.model import DepthHead, DepthHeads
from dag_core.resumable import TrainState

#: ``(images in [-1, 1] (B, 3, H, W), depth in metres (B, 1, R, R))``
Batch = tuple[Tensor, Tensor]
Batches = Iterable[Batch] | Callable[[int], Batch]


def random_batches(
    images: Tensor, depths: Tensor, batch_size: int, seed: int = 0
) -> Callable[[int], Batch]:
    """A ``step -> (images, depths)`` sampler of random minibatches, a function of step and seed."""
    n = images.shape[0]
    if n == 0 or depths.shape[0] != n:
        raise DagError(f"need matching non-empty images/depths, got {n} and {depths.shape[0]}")

    def batch(step: int) -> Batch:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        index = torch.randperm(n, generator=generator)[: min(batch_size, n)]
        return images[index], depths[index]

    return batch


def replacement_batches(
    images: Tensor, depths: Tensor, batch_size: int, seed: int = 0
) -> Callable[[int], Batch]:
    """A ``step -> (images, depths)`` sampler drawing each batch's pairs with replacement, a
    function of step and seed (how stage ``train_heads`` feeds :func:`train_heads`)."""

    def batch(step: int) -> Batch:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        size = min(batch_size, images.shape[0])
        index = torch.randint(0, images.shape[0], (size,), generator=generator)
        return images[index], depths[index]

    return batch


def _batch_stream(batches: Batches, steps: int, log: Callable[[str], None]) -> Iterator[Batch]:
    """``steps`` batches from a ``step -> batch`` callable or a (re-iterated) iterable."""
    if callable(batches):
        yield from (batches(step) for step in range(steps))
        return
    step = 0
    while step < steps:
        epoch = 0
        for batch in batches:
            yield batch
            step, epoch = step + 1, epoch + 1
            if step == steps:
                return
        if epoch == 0:
            if step == 0:
                raise DagError("no training batches: the batch iterable is empty")
            log(f"batch iterator exhausted after {step} of {steps} steps")
            return


def _sample_valid_pixels(
    depth: Tensor, count: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``count`` flat pixel indices per image drawn uniformly among valid pixels, and their mask."""
    valid = DepthNorm.valid(depth).flatten(1)
    weights = valid.float().cpu()
    weights[weights.sum(1) == 0] = 1.0  # no label at all: draw anyway, the mask zeroes the loss
    pixels = torch.multinomial(weights, count, replacement=True, generator=generator)
    pixels = pixels.to(depth.device)
    return pixels, valid.gather(1, pixels)


def _every_pixel(depth: Tensor) -> tuple[Tensor, Tensor]:
    """Every flat pixel index of each image, and the mask of the valid ones."""
    valid = DepthNorm.valid(depth).flatten(1)
    pixels = torch.arange(valid.shape[1], device=depth.device).expand(valid.shape[0], -1)
    return pixels, valid


def fit_pixel_heads(
    unet: UNet2DModel,
    scheduler: Any,
    batches: Batches,
    heads: Mapping[str, tuple[Sequence[int], DepthHead]],
    config: HeadConfig,
    norm: DepthNorm,
    *,
    timestep: int | None = None,
    log: Callable[[str], None] = print,
    snapshot: TrainState | None = None,
) -> list[dict[str, float]]:
    """Train several heads at once on one frozen-U-Net forward per batch.

    ``heads`` maps a name to (decoder layers it reads, head). Each step draws t ~ U[0, t_max or T)
    (or uses ``timestep``), noises the batch with ``scheduler.add_noise``, extracts features under
    ``no_grad``, and minimises the masked L1 error in normalised depth at ``pixels_per_image``
    valid pixels per image (None: at every valid pixel); Adam with cosine learning-rate decay
    over ``config.steps``. Returns one row {"step", "loss_<name>", ...} per step. ``snapshot``:
    continue from its saved state (the batches of the steps already done are drawn and skipped)
    and save the loop's state there as it goes, so a stopped run resumes to the same bytes
    (:class:`~dag_core.resumable.TrainState`).
    """
    num_t = int(scheduler.config.num_train_timesteps)
    t_high = min(config.t_max or num_t, num_t)
    if timestep is not None and not 0 <= timestep < num_t:
        raise DagError(f"timestep {timestep} out of range 0..{num_t - 1}")
    blocks = sorted({k for layer_blocks, _ in heads.values() for k in layer_blocks})
    device = unet.device
    generator = torch.Generator().manual_seed(config.seed)
    params = [p for _, head in heads.values() for p in head.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    # cosine decay to 0 over the run: the last steps average out the noise of t ~ U[0, t_max)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    for _, head in heads.values():
        head.to(device).train()
    was_training = unet.training
    unet.eval()
    rows: list[dict[str, float]] = []
    every = max(1, config.steps // 10)
    start = 0
    if snapshot is not None and (saved := snapshot.load()) is not None:
        for name, (_, head) in heads.items():
            head.load_state_dict(saved["heads"][name])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        generator.set_state(saved["generator"])
        rows, start = list(saved["rows"]), int(saved["step"])
        log(f"heads: steps 1-{start} from the saved state {snapshot.path}")
    stream = itertools.islice(_batch_stream(batches, config.steps, log), start, None)
    try:
        with FeatureExtractor(unet, blocks) as extractor:
            for step, (images, depth) in enumerate(stream, start=start):
                images = images.to(device=device, dtype=unet.dtype)
                depth = depth.to(device=device, dtype=torch.float32)
                if depth.ndim != 4 or depth.shape[1] != 1 or depth.shape[-1] != depth.shape[-2]:
                    raise DagError(f"depth batch must be (B, 1, R, R), got {tuple(depth.shape)}")
                b, size = images.shape[0], depth.shape[-1]
                if timestep is None:
                    t = torch.randint(0, t_high, (b,), generator=generator)
                else:
                    t = torch.full((b,), timestep, dtype=torch.long)
                t = t.to(device)
                with torch.no_grad():
                    features = extractor.features(noise_images(scheduler, images, t, generator), t)
                by_block = dict(zip(blocks, features, strict=True))
                if config.pixels_per_image is None:
                    pixels, mask = _every_pixel(depth)
                else:
                    pixels, mask = _sample_valid_pixels(depth, config.pixels_per_image, generator)
                labels = depth.flatten(1).gather(1, pixels)
                target = norm.normalize(torch.where(mask, labels, norm.max_depth))
                weight = mask.float()
                losses: dict[str, Tensor] = {}
                inputs: dict[tuple[tuple[int, ...], torch.dtype], Tensor] = {}  # ensemble: once
                for name, (layer_blocks, head) in heads.items():
                    dtype = head.out.weight.dtype
                    key = (tuple(layer_blocks), dtype)
                    if key not in inputs:
                        inputs[key] = sample_pixels(
                            [by_block[k].to(dtype) for k in layer_blocks], pixels, size
                        )
                    pred = head(inputs[key], t)[:, 0, :, 0]
                    losses[name] = ((pred - target).abs() * weight).sum() / weight.sum().clamp(
                        min=1
                    )
                optimizer.zero_grad(set_to_none=True)
                torch.stack(list(losses.values())).sum().backward()
                optimizer.step()
                schedule.step()
                row: dict[str, float] = {"step": step}
                row.update({f"loss_{name}": loss.item() for name, loss in losses.items()})
                rows.append(row)
                if step % every == 0 or step == config.steps - 1:
                    log(" ".join(f"{k}={v:.4g}" for k, v in row.items()))
                if snapshot is not None and snapshot.due() and step + 1 < config.steps:
                    snapshot.save(
                        {
                            "step": step + 1,
                            "heads": {n: h.state_dict() for n, (_, h) in heads.items()},
                            "optimizer": optimizer.state_dict(),
                            "schedule": schedule.state_dict(),
                            "generator": generator.get_state(),
                            "rows": rows,
                        }
                    )
    finally:
        unet.train(was_training)
        for _, head in heads.values():
            head.eval()
    return rows


def _first_depth_size(stream: Iterator[Batch]) -> tuple[int, Iterator[Batch]]:
    try:
        first = next(stream)
    except StopIteration:
        raise DagError("no training batches") from None
    return int(first[1].shape[-1]), itertools.chain([first], stream)


def train_heads(
    unet: UNet2DModel,
    scheduler: Any,
    batches: Batches,
    config: HeadConfig,
    norm: DepthNorm,
    *,
    base_hash: str | None = None,
    log: Callable[[str], None] = print,
    snapshot: TrainState | None = None,
) -> tuple[DepthHeads, list[dict[str, float]]]:
    """Train MLP-S and MLP-W together on a frozen U-Net; deterministic in ``config.seed``.

    ``batches``: an iterable of, or a ``step -> `` callable returning, (images in [-1, 1]
    (B, 3, H, W) at the U-Net's resolution, depth in metres (B, 1, R, R); 0/NaN = no label).
    The heads output R×R maps. Returns the heads (eval mode, on the U-Net's device) and the
    per-step log rows {"step", "loss_s", "loss_w"}.

    With ``config.ensemble`` = K > 1 the K strong members are trained side by side with the weak
    head, each on its own L1 loss, on the same U-Net forward, noise, t and pixels per step (so
    member 0 follows the same path as the single head of K = 1); the rows hold
    "loss_s0" … "loss_s{K-1}" and "loss_w". ``snapshot``: resume and save the loop's state
    (:func:`fit_pixel_heads`).
    """
    layers = decoder_layers(unet)
    check_blocks(layers, (*config.strong_blocks, *config.weak_blocks))
    resolution, stream = _first_depth_size(_batch_stream(batches, config.steps, log))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        heads = DepthHeads(
            config,
            norm,
            {k: layers[k].channels for k in (*config.strong_blocks, *config.weak_blocks)},
            resolution,
            base_hash=base_hash,
            num_train_timesteps=int(scheduler.config.num_train_timesteps),
        )
    members = heads.strong_members
    named = {"s": members[0]} if len(members) == 1 else {f"s{k}": m for k, m in enumerate(members)}
    trained: dict[str, tuple[Sequence[int], DepthHead]] = {
        name: (config.strong_blocks, head) for name, head in named.items()
    }
    trained["w"] = (config.weak_blocks, heads.weak)
    rows = fit_pixel_heads(
        unet, scheduler, stream, trained, config, norm, log=log, snapshot=snapshot
    )
    return heads.eval(), rows
