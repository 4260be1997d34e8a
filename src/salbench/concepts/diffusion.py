"""Text-to-image diffusion for DEPICT: a small diffusers pipeline trained on the rendered images and their
concept captions, or any pretrained diffusers text-to-image pipeline.

:class:`ConceptDiffusionPipeline` is a ``diffusers.DiffusionPipeline`` (a ``UNet2DConditionModel``, a small
``transformers`` CLIP text encoder, a word-level tokenizer over the caption vocabulary, a DPM-Solver++
scheduler and, optionally, an ``AutoencoderKL``), so it saves and loads like any diffusers pipeline and is
called like Stable Diffusion: ``pipe(prompt=[...], num_inference_steps=..., guidance_scale=..., generator=[...],
output_type="pt")``. Without ``vae_channels`` the UNet denoises RGB pixels; with them it is a latent diffusion
model as Stable Diffusion: an autoencoder is trained first on the images (reconstruction + a small KL term),
the UNet then denoises its latents (``2^(len(vae_channels)-1)`` times smaller per side, so many more steps per
second) and the decoder turns sampled latents into images. Training is DDPM denoising (v-prediction by
default) with caption dropout for classifier-free guidance.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

try:
    from diffusers import (AutoencoderKL, DDPMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler,
                           UNet2DConditionModel)
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
    from diffusers.utils.torch_utils import randn_tensor
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast
except ImportError as e:  # pragma: no cover - install problem
    raise ImportError("the diffusion generator needs diffusers and transformers: "
                      "pip install -e . (they are core dependencies)") from e

from ..models.training import augment, optimiser_step
from ..params import ParamsError, check_keys
from ..render.preview import grid
from ..render.tasks import Presence
from ..render.world import World
from .annotations import (CAPTION_CONTEXTS, CaptionContext, captions, concept_matrix, context_phrases,
                          vocabulary)
from .generators import GeneratorContext, image_seed
from .images import resize

PAD, UNK = "[PAD]", "[UNK]"


@dataclass(frozen=True)
class DiffusionConfig:
    """``concepts.diffusion`` params: where the pipeline comes from, how it is trained and sampled."""

    pretrained: str | None = None  # diffusers pipeline dir or hub id; None = train a ConceptDiffusionPipeline
    resolution: int = 32  # generation size (px); the classifiers get it resized to their input size
    # training (ignored with `pretrained`)
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    grad_clip: float = 1.0
    ema_decay: float = 0.99  # exponential moving average of the weights (with warm-up); 0 = off
    p_uncond: float = 0.1  # caption dropout, for classifier-free guidance
    flip: bool = True  # captions say nothing about left/right
    channels: tuple[int, ...] = (32, 64, 64)  # UNet block widths; cross-attention in all but the first
    layers_per_block: int = 1
    attention_head_dim: int = 8
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 2
    # the attention-pooled caption added to the timestep embedding (diffusers' addition_embed_type "text"), so every
    # ResNet block sees which concepts the caption names, besides cross-attention in the attention blocks
    pooled_caption: bool = False
    # batches draw image i with weight (number of training images with i's caption)^-balance: 0 = uniform epochs; 1 =
    # every caption (concept combination) equally often, so concepts that co-occur in the data (a spurious one) are
    # seen apart as often as together and the UNet must read each one's phrase
    balance: float = 0.0
    train_timesteps: int = 1000
    beta_schedule: str = "linear"
    prediction_type: str = "v_prediction"  # or "epsilon", "sample"; v degrades to blur, not noise, when undertrained
    snr_gamma: float = 0.0  # min-SNR-γ loss weighting (Hang et al. 2023; 5 in the paper); 0 = plain MSE
    log_every: int = 10  # dvclive loss logging period (steps)
    sample_every: int = 100  # dvclive sample-grid period (steps); 0 = only at the end
    # sampling
    inference_steps: int = 10
    guidance_scale: float = 2.0
    # 1 = text-to-image from pure noise (DEPICT); < 1 = SDEdit (Meng et al. 2022): each counterfactual starts from its
    # real image's latent noised to this fraction of the sampler's steps, so only what the caption changes is redrawn
    strength: float = 1.0
    sample_batch_size: int = 64
    # what a caption says besides the concepts (salbench.concepts.annotations.context_phrases): "none", or "colors" (the
    # colours of the objects that carry no concept, which no permutation changes)
    caption_context: CaptionContext = "none"
    # latent diffusion: an AutoencoderKL trained on the images first (ignored with `pretrained`)
    vae_channels: tuple[int, ...] = ()  # encoder/decoder block widths; () = the UNet works on pixels
    latent_channels: int = 4
    vae_steps: int = 500
    vae_batch_size: int = 32
    vae_lr: float = 1e-3
    vae_kl: float = 1e-6  # weight of the KL term (keeps the latent scale bounded, as Stable Diffusion's VAE)
    vae_loss: str = "mse"  # reconstruction error per pixel: "mse" or "l1"
    vae_saturation_weight: float = 0.0  # pixel weight 1 + this × colour saturation: the grey background counts less

    @property
    def latent_size(self) -> int:
        """Side of what the UNet denoises: the resolution, or the autoencoder's latent grid."""
        return self.resolution // 2 ** max(len(self.vae_channels) - 1, 0)

    @classmethod
    def from_params(cls, p: Mapping[str, Any], where: str = "concepts.diffusion") -> "DiffusionConfig":
        check_keys(p, [f.name for f in fields(cls)], where)
        cfg = cls(**{k: tuple(v) if k in ("channels", "vae_channels") else v for k, v in p.items()})
        if cfg.vae_channels and (any(c % 8 for c in cfg.vae_channels)
                                 or cfg.resolution % 2 ** (len(cfg.vae_channels) - 1)):
            raise ParamsError(f"{where}.vae_channels={list(cfg.vae_channels)}: give widths that are multiples of 8, "
                              f"with resolution={cfg.resolution} divisible by 2^(len(vae_channels)-1); or [] for "
                              "pixel space")
        if cfg.latent_size % 2 ** (len(cfg.channels) - 1):
            raise ParamsError(f"{where}.resolution={cfg.resolution} must be divisible by 2^(len(channels)-1) = "
                              f"{2 ** (len(cfg.channels) - 1)}"
                              + (f" times the autoencoder's 2^(len(vae_channels)-1) = "
                                 f"{cfg.resolution // cfg.latent_size}" if cfg.vae_channels else ""))
        if len(cfg.channels) < 2 or any(c % 8 or c % cfg.attention_head_dim for c in cfg.channels):
            raise ParamsError(f"{where}.channels={list(cfg.channels)}: give >= 2 widths, each a multiple of 8 and of "
                              f"attention_head_dim={cfg.attention_head_dim}")
        if cfg.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ParamsError(f"{where}.prediction_type must be epsilon, v_prediction or sample, "
                              f"got {cfg.prediction_type!r}")
        if cfg.caption_context not in CAPTION_CONTEXTS:
            raise ParamsError(f"{where}.caption_context must be one of {list(CAPTION_CONTEXTS)}, "
                              f"got {cfg.caption_context!r}")
        if cfg.vae_loss not in ("mse", "l1"):
            raise ParamsError(f"{where}.vae_loss must be mse or l1, got {cfg.vae_loss!r}")
        if cfg.steps < 1 or cfg.batch_size < 1 or cfg.inference_steps < 1 or not 0 <= cfg.p_uncond < 1 \
                or not 0 <= cfg.ema_decay < 1 or not 0 <= cfg.balance <= 1 or cfg.snr_gamma < 0 \
                or cfg.latent_channels < 1 or cfg.vae_steps < 1 or cfg.vae_batch_size < 1 or cfg.vae_kl < 0 \
                or cfg.vae_saturation_weight < 0 or not 0 < cfg.strength <= 1:
            raise ParamsError(f"{where}: need steps, batch_size, inference_steps, latent_channels, vae_steps, "
                              "vae_batch_size >= 1, 0 <= p_uncond < 1, 0 <= ema_decay < 1, 0 <= balance <= 1, "
                              "snr_gamma >= 0, vae_kl >= 0, vae_saturation_weight >= 0 and 0 < strength <= 1")
        return cfg


def build_tokenizer(vocab: Sequence[str], max_length: int) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over ``vocab`` (lower-cased, punctuation split off), padded to ``max_length``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    ids = {w: i for i, w in enumerate([PAD, UNK, *vocab])}
    tok = Tokenizer(models.WordLevel(ids, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, model_max_length=max_length)


class ConceptDiffusionPipeline(DiffusionPipeline):
    """Text-to-image pipeline; images are float N×3×S×S in [0, 1] with S = ``unet.config.sample_size`` (pixel space)
    or that times the ``vae``'s downsampling factor (latent space)."""

    _optional_components = ["vae"]

    def __init__(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer: PreTrainedTokenizerFast,
                 scheduler: DPMSolverMultistepScheduler, vae: AutoencoderKL | None = None) -> None:
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler, vae=vae)

    @property
    def image_size(self) -> int:
        size = self.unet.config.sample_size
        return size if self.vae is None else size * 2 ** (len(self.vae.config.block_out_channels) - 1)

    def token_ids(self, prompts: Sequence[str]) -> torch.Tensor:
        """Int64 N×L token ids, padded to the tokenizer's ``model_max_length``."""
        return self.tokenizer(list(prompts), padding="max_length", truncation=True, return_tensors="pt",
                              max_length=self.tokenizer.model_max_length).input_ids.to(self.device)

    @torch.no_grad()
    def __call__(self, prompt: Sequence[str], height: int | None = None, width: int | None = None,
                 num_inference_steps: int = 10, guidance_scale: float = 1.0,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 output_type: str = "pt", image: torch.Tensor | None = None, strength: float = 1.0
                 ) -> ImagePipelineOutput:
        """Images of ``prompt``: float N×3×S×S in [0, 1] ("pt") or N×S×S×3 numpy ("np"); pass one generator per
        image for noise that does not depend on the batch; guidance_scale 1 = no classifier-free guidance. With
        float N×3×S×S ``image`` in [0, 1] and ``strength`` < 1 (SDEdit), sampling starts from ``image`` noised to
        the last round(strength × num_inference_steps) of the sampler's steps instead of from pure noise."""
        size = self.image_size
        if (height or size, width or size) != (size, size):
            raise ValueError(f"this pipeline generates {size}×{size} images, not {height}×{width}")
        if output_type not in ("pt", "np"):
            raise ValueError(f"output_type must be 'pt' or 'np', got {output_type!r}")
        if not 0 < strength <= 1 or (strength < 1) != (image is not None):
            raise ValueError(f"strength={strength}: give 0 < strength < 1 with an image (SDEdit) or 1 without one")
        n = len(prompt)
        cond = self.text_encoder(self.token_ids(prompt)).last_hidden_state
        guided = guidance_scale != 1.0
        if guided:
            cond = torch.cat([self.text_encoder(self.token_ids([""] * n)).last_hidden_state, cond])
        latent = self.unet.config.sample_size
        x = randn_tensor((n, self.unet.config.in_channels, latent, latent), generator=generator, device=self.device,
                         dtype=self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        timesteps = self.scheduler.timesteps
        if image is None:
            x = x * self.scheduler.init_noise_sigma
        else:
            if image.shape != (n, 3, size, size):
                raise ValueError(f"image must be {n}×3×{size}×{size} in [0, 1], got {tuple(image.shape)}")
            start = len(timesteps) - max(1, round(strength * len(timesteps)))
            timesteps = timesteps[start:]
            self.scheduler.set_begin_index(start)
            x0 = image.to(self.device, self.unet.dtype) * 2 - 1
            x0 = x0 if self.vae is None else encode(self.vae, x0)
            x = self.scheduler.add_noise(x0, x, timesteps[:1].repeat(n))
        for t in self.progress_bar(timesteps):
            inp = self.scheduler.scale_model_input(torch.cat([x, x]) if guided else x, t)
            eps = self.unet(inp, t, encoder_hidden_states=cond).sample
            if guided:
                uncond, text = eps.chunk(2)
                eps = uncond + guidance_scale * (text - uncond)
            x = self.scheduler.step(eps, t, x).prev_sample
        if self.vae is not None:
            x = self.vae.decode(x / self.vae.config.scaling_factor).sample
        images = (x / 2 + 0.5).clamp(0, 1).float()
        return ImagePipelineOutput(images=images if output_type == "pt" else images.permute(0, 2, 3, 1).cpu().numpy())


def build_pipeline(cfg: DiffusionConfig, vocab: Sequence[str], max_length: int, seed: int) -> ConceptDiffusionPipeline:
    """An untrained :class:`ConceptDiffusionPipeline` whose weights depend only on ``seed``."""
    n = len(cfg.channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab) + 2, hidden_size=cfg.text_dim, intermediate_size=4 * cfg.text_dim,
            num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads, max_position_embeddings=max_length,
            pad_token_id=0, bos_token_id=0, eos_token_id=0))
        k = cfg.latent_channels if cfg.vae_channels else 3
        unet = UNet2DConditionModel(
            sample_size=cfg.latent_size, in_channels=k, out_channels=k, block_out_channels=tuple(cfg.channels),
            layers_per_block=cfg.layers_per_block, norm_num_groups=8, cross_attention_dim=cfg.text_dim,
            attention_head_dim=cfg.attention_head_dim,
            **({"addition_embed_type": "text", "addition_embed_type_num_heads": cfg.text_heads}
               if cfg.pooled_caption else {}),
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",))
        vae = None
        if cfg.vae_channels:
            m = len(cfg.vae_channels)
            # 2 norm groups: with 8 (2 channels each, near instance norm) a [8, 16] autoencoder kept 2.7x the
            # reconstruction error of two-colour images after 150 steps (0.163 vs 0.061, measured)
            vae = AutoencoderKL(
                block_out_channels=tuple(cfg.vae_channels), down_block_types=("DownEncoderBlock2D",) * m,
                up_block_types=("UpDecoderBlock2D",) * m, latent_channels=cfg.latent_channels, norm_num_groups=2,
                sample_size=cfg.resolution, mid_block_add_attention=False, scaling_factor=1.0)
    # Dynamic thresholding keeps the x0 predictions of early (noisiest) steps inside the pixel range (pixels only:
    # unit-variance latents have no such range).
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=cfg.train_timesteps, beta_schedule=cfg.beta_schedule, prediction_type=cfg.prediction_type,
        thresholding=vae is None, sample_max_value=1.0)
    return ConceptDiffusionPipeline(unet, text, build_tokenizer(vocab, max_length), scheduler, vae)


def scene_captions(task: Presence, concepts: torch.Tensor, records: Sequence[Mapping[str, Any]],
                   cfg: DiffusionConfig) -> list[str]:
    """The prompts of bool N×K ``concepts`` for the N scenes ``records``: their captions with ``cfg``'s context."""
    return captions(task, concepts, context_phrases(task, records, cfg.caption_context))


def untrained_pipeline(cfg: DiffusionConfig, task: Presence, world: World, prompts: Sequence[str],
                       seed: int) -> ConceptDiffusionPipeline:
    """:func:`build_pipeline` with the vocabulary of ``cfg``'s captions, as long as the longest of ``prompts``."""
    vocab = vocabulary(task, None if cfg.caption_context == "none" else world)
    longest = max(len(ids) for ids in build_tokenizer(vocab, 1 << 16)(list(prompts)).input_ids)
    return build_pipeline(cfg, vocab, longest, seed)


def snr_weights(scheduler: DDPMScheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ loss weights of timesteps ``t`` (N) for the scheduler's prediction type: min(SNR, γ) / SNR for
    epsilon, min(SNR, γ) / (SNR + 1) for v, min(SNR, γ) for the sample (so all weight the x0 error alike)."""
    abar = scheduler.alphas_cumprod.to(t.device)[t].to(torch.float32)
    snr = abar / (1 - abar)
    clipped = snr.clamp(max=gamma)
    kind = scheduler.config.prediction_type
    return clipped / snr if kind == "epsilon" else clipped / (snr + 1) if kind == "v_prediction" else clipped


def _scaled(images: torch.Tensor, size: int, batch_size: int = 256) -> torch.Tensor:
    """Float N×3×size×size in [-1, 1] from uint8 N×H×W×3, ``batch_size`` at a time."""
    return torch.cat([resize(images[a:a + batch_size], size) for a in range(0, len(images), batch_size)]) * 2 - 1


def reconstruction_loss(rec: torch.Tensor, x: torch.Tensor, kind: str = "mse", saturation_weight: float = 0.0
                        ) -> torch.Tensor:
    """Mean per-pixel error (squared for "mse", absolute for "l1") of float N×3×H×W ``rec`` against ``x`` (both in
    [-1, 1]), each pixel weighted by 1 + ``saturation_weight`` × the saturation of ``x`` there (max − min channel,
    in [0, 1]), so coloured objects count more than the grey background they sit on."""
    err = (rec - x).abs() if kind == "l1" else (rec - x).pow(2)
    if saturation_weight:
        err = err * (1 + saturation_weight / 2 * (x.amax(1, keepdim=True) - x.amin(1, keepdim=True)))
    return err.mean()


def train_autoencoder(vae: AutoencoderKL, images: torch.Tensor, cfg: DiffusionConfig, seed: int,
                      live: Any | None = None, preview: int = 8,
                      callback: Callable[[int], None] | None = None) -> list[float]:
    """Train ``vae`` in place on uint8 N×H×W×3 ``images`` (resized to ``cfg.resolution``, random flips): the
    :func:`reconstruction_loss` + ``cfg.vae_kl`` × KL, AdamW with warm-up and cosine decay; all
    randomness from ``seed``. The decoder sees the posterior mean (with a sampled latent, two-colour images kept 1.4x
    the error after 150 steps, measured), so the KL term only keeps the latents bounded. Then sets ``scaling_factor`` to 1 / std of the training latents' means, so the UNet
    sees unit-variance latents. Logs ``autoencoder/loss`` and a grid of images over reconstructions to ``live``.
    ``callback(step)`` is called in eval mode every ``cfg.sample_every`` steps and at the end (e.g. to score
    :func:`reconstruct`). Returns the loss per step."""
    device = next(vae.parameters()).device
    x_all = _scaled(images, cfg.resolution).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=cfg.weight_decay)
    lr_sched = get_cosine_schedule_with_warmup(opt, min(cfg.warmup_steps, cfg.vae_steps // 10), cfg.vae_steps)
    gen = torch.Generator().manual_seed(seed)
    bs = min(cfg.vae_batch_size, len(images))
    order = torch.empty(0, dtype=torch.int64)
    losses = []
    vae.train()
    for step in range(1, cfg.vae_steps + 1):
        if len(order) < bs:
            order = torch.randperm(len(images), generator=gen)
        idx, order = order[:bs].to(device), order[bs:]
        x = augment(x_all[idx], gen, cfg.flip, 0)
        post = vae.encode(x).latent_dist
        loss = reconstruction_loss(vae.decode(post.mean).sample, x, cfg.vae_loss, cfg.vae_saturation_weight) \
            + cfg.vae_kl * post.kl().mean()
        optimiser_step(loss, vae.parameters(), opt, lr_sched, cfg.grad_clip)
        losses.append(loss.item())
        if live is not None and (step % cfg.log_every == 0 or step == cfg.vae_steps):
            live.step = step
            live.log_metric("autoencoder/loss", float(np.mean(losses[-cfg.log_every:])))
            live.make_summary()
        if callback is not None and cfg.sample_every and step % cfg.sample_every == 0 and step < cfg.vae_steps:
            vae.eval()
            callback(step)
            vae.train()
    vae.eval()
    vae.register_to_config(scaling_factor=1.0)
    vae.register_to_config(scaling_factor=1 / float(encode(vae, x_all).std()))
    if live is not None:
        k = min(preview, len(images))
        live.log_image("autoencoder/reconstructions.png",
                       grid_image(torch.cat([_bytes(x_all[:k]), reconstruct(vae, images[:k], cfg.resolution)]), k))
    if callback is not None:
        callback(cfg.vae_steps)
    return losses


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: torch.Tensor, resolution: int, batch_size: int = 256) -> torch.Tensor:
    """Uint8 N×R×R×3 decodings of the posterior means of uint8 N×H×W×3 ``images`` resized to ``resolution``: the best
    a latent diffusion model on ``vae``'s latents can draw them."""
    was = vae.training
    vae.eval()
    out = torch.cat([_bytes(vae.decode(vae.encode(_scaled(images[a:a + batch_size], resolution).to(vae.device))
                                       .latent_dist.mean).sample)
                     for a in range(0, len(images), batch_size)])
    vae.train(was)
    return out


@torch.no_grad()
def encode(vae: AutoencoderKL, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Scaled latents (posterior means × ``scaling_factor``) N×L×s×s of float N×3×S×S images in [-1, 1]."""
    was = vae.training
    vae.eval()
    out = torch.cat([vae.encode(x[a:a + batch_size]).latent_dist.mean for a in range(0, len(x), batch_size)])
    vae.train(was)
    return out * vae.config.scaling_factor


def _bytes(x: torch.Tensor) -> torch.Tensor:
    """Uint8 N×H×W×3 from float N×3×H×W in [-1, 1]."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1)


def caption_weights(prompts: Sequence[str], balance: float) -> torch.Tensor:
    """Float N sampling weights: (number of prompts equal to prompt i)^-``balance``, normalised to sum 1 (pass the
    concept captions without their context to balance concept combinations).

    >>> caption_weights(["a", "a", "a", "b"], 1.0).tolist()
    [0.1666666716337204, 0.1666666716337204, 0.1666666716337204, 0.5]
    """
    _, inverse, counts = np.unique(np.asarray(prompts), return_inverse=True, return_counts=True)
    w = torch.from_numpy(counts[inverse].astype(np.float64) ** -balance)
    return (w / w.sum()).float()


def train_pipeline(pipe: ConceptDiffusionPipeline, images: torch.Tensor, prompts: Sequence[str], cfg: DiffusionConfig,
                   seed: int, live: Any | None = None, preview: int = 8,
                   callback: Callable[[int], None] | None = None, groups: Sequence[str] | None = None) -> list[float]:
    """Train ``pipe`` in place on uint8 N×H×W×3 ``images`` (resized to ``cfg.resolution``) and their captions.

    With a ``vae`` (latent diffusion), first trains it (:func:`train_autoencoder`), encodes every training image
    and its mirror image once, and trains the UNet on those latents. All randomness (batches, flips, caption dropout, noise, timesteps) comes from a CPU generator seeded
    with ``seed``. With a dvclive ``live``, logs ``diffusion/loss`` every ``cfg.log_every`` steps and a grid
    of the first ``preview`` training images over samples from their captions every ``cfg.sample_every``
    steps and at the end (with the EMA weights, which the pipeline keeps at the end). ``callback(step)`` is called
    at the same steps with the EMA weights in place (e.g. to score samples). ``groups`` (N strings, default the
    prompts) is what ``cfg.balance`` counts: the concept captions, so that a caption context (unique per scene)
    does not undo the balancing of concept combinations. Returns the loss per step.
    """
    if len(images) != len(prompts) or (groups is not None and len(groups) != len(prompts)):
        raise ValueError(f"{len(images)} images, {len(prompts)} captions"
                         + ("" if groups is None else f" and {len(groups)} groups") + ": give one per image")
    device = pipe.device
    images = images.to(device)
    latents = None
    if pipe.vae is not None:
        train_autoencoder(pipe.vae, images, cfg, seed + 1, live)
        pixels = _scaled(images, cfg.resolution)
        latents = torch.stack([encode(pipe.vae, pixels), *([encode(pipe.vae, pixels.flip(3))] if cfg.flip else [])])
        del pixels
    ids = pipe.token_ids(prompts)
    empty = pipe.token_ids([""])
    noise_sched = DDPMScheduler(num_train_timesteps=cfg.train_timesteps, beta_schedule=cfg.beta_schedule,
                                prediction_type=cfg.prediction_type)
    params = [*pipe.unet.parameters(), *pipe.text_encoder.parameters()]
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_sched = get_cosine_schedule_with_warmup(opt, cfg.warmup_steps, cfg.steps)
    gen = torch.Generator().manual_seed(seed)
    bs = min(cfg.batch_size, len(images))
    weights = caption_weights(prompts if groups is None else groups, cfg.balance) if cfg.balance else None
    order = torch.empty(0, dtype=torch.int64)
    losses = []
    pipe.unet.train()
    pipe.text_encoder.train()
    for step in range(1, cfg.steps + 1):
        if weights is not None:  # caption-balanced batches
            idx = torch.multinomial(weights, bs, replacement=True, generator=gen).to(device)
        else:  # epochs of shuffled batches
            if len(order) < bs:
                order = torch.randperm(len(images), generator=gen)
            idx, order = order[:bs].to(device), order[bs:]
        if latents is None:
            x = augment(resize(images[idx], cfg.resolution), gen, cfg.flip, 0) * 2 - 1
        else:  # the latents of the image or of its mirror image
            x = latents[torch.randint(len(latents), (bs,), generator=gen).to(device), idx]
        drop = (torch.rand(bs, generator=gen) < cfg.p_uncond).to(device)
        tokens = torch.where(drop[:, None], empty, ids[idx])
        noise = torch.randn(x.shape, generator=gen).to(device)
        t = torch.randint(0, cfg.train_timesteps, (bs,), generator=gen).to(device)
        pred = pipe.unet(noise_sched.add_noise(x, noise, t), t,
                         encoder_hidden_states=pipe.text_encoder(tokens).last_hidden_state).sample
        if cfg.prediction_type == "v_prediction":
            target = noise_sched.get_velocity(x, noise, t)
        else:
            target = noise if cfg.prediction_type == "epsilon" else x
        if cfg.snr_gamma:
            loss = (F.mse_loss(pred, target, reduction="none").mean((1, 2, 3)) *
                    snr_weights(noise_sched, t, cfg.snr_gamma)).mean()
        else:
            loss = F.mse_loss(pred, target)
        optimiser_step(loss, params, opt, lr_sched, cfg.grad_clip)
        decay = min(cfg.ema_decay, step / (step + 10))  # warm-up: early weights are soon forgotten
        for e, p in zip(ema, params):
            e.lerp_(p.detach(), 1 - decay)
        losses.append(loss.item())
        if live is not None and (step % cfg.log_every == 0 or step == cfg.steps):
            live.step = step
            live.log_metric("diffusion/loss", float(np.mean(losses[-cfg.log_every:])))
            live.log_metric("diffusion/lr", lr_sched.get_last_lr()[0])
            live.make_summary()
        if (live is not None or callback is not None) and \
                ((cfg.sample_every and step % cfg.sample_every == 0) or step == cfg.steps):
            with _weights(params, ema):
                pipe.unet.eval()
                pipe.text_encoder.eval()
                if live is not None:
                    k = min(preview, len(images))
                    fake = sample_images(pipe, prompts[:k], list(range(k)), cfg,
                                         images[:k] if cfg.strength < 1 else None)
                    real = (resize(images[:k], cfg.resolution) * 255).round().byte().permute(0, 2, 3, 1)
                    live.log_image(f"diffusion/samples/step{step:06d}.png",
                                   grid_image(torch.cat([real, fake.to(device)]), k))
                if callback is not None:
                    callback(step)
                pipe.unet.train()
                pipe.text_encoder.train()
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    pipe.unet.eval()
    pipe.text_encoder.eval()
    return losses


@contextlib.contextmanager
def _weights(params: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> Iterator[None]:
    """Evaluate with ``values`` in place of ``params``, restoring them afterwards."""
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, v in zip(params, saved):
                p.copy_(v)


def sample_images(pipe: DiffusionPipeline, prompts: Sequence[str], seeds: Sequence[int], cfg: DiffusionConfig,
                  images: torch.Tensor | None = None) -> torch.Tensor:
    """Uint8 N×S×S×3 images of ``prompts``; image i's noise comes from its own CPU generator seeded with
    ``seeds[i]``, so it does not depend on the batch it is generated in. ``cfg.sample_batch_size`` at a time. With
    ``cfg.strength`` < 1, SDEdit from uint8 N×H×W×3 ``images`` (resized to ``cfg.resolution``), the real images the
    rows are counterfactuals of: ``pipe`` is then a :class:`ConceptDiffusionPipeline` or a diffusers image-to-image
    pipeline (:func:`editing_pipeline`)."""
    if (cfg.strength < 1) != (images is not None):
        raise ValueError(f"strength={cfg.strength} needs the real images exactly when it is < 1")
    # diffusers' image-to-image pipelines take their size from the image
    size = {} if images is not None and not isinstance(pipe, ConceptDiffusionPipeline) else \
        {"height": cfg.resolution, "width": cfg.resolution}
    pipe.set_progress_bar_config(disable=True)
    out = []
    for a in range(0, len(prompts), cfg.sample_batch_size):
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[a:a + cfg.sample_batch_size]]
        edit = {} if images is None else {
            "image": resize(images[a:a + cfg.sample_batch_size], cfg.resolution).to(pipe.device),
            "strength": cfg.strength}
        x = pipe(prompt=list(prompts[a:a + cfg.sample_batch_size]), num_inference_steps=cfg.inference_steps,
                 guidance_scale=cfg.guidance_scale, generator=gens, output_type="pt", **size, **edit).images
        out.append((x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu())
    return torch.cat(out) if out else torch.empty(0, cfg.resolution, cfg.resolution, 3, dtype=torch.uint8)


def editing_pipeline(pipe: DiffusionPipeline) -> DiffusionPipeline:
    """``pipe`` able to start from an image: a :class:`ConceptDiffusionPipeline` as it is, any other diffusers
    text-to-image pipeline as its image-to-image twin (the same components)."""
    if isinstance(pipe, ConceptDiffusionPipeline):
        return pipe
    from diffusers import AutoPipelineForImage2Image

    return AutoPipelineForImage2Image.from_pipe(pipe)


def load_pipeline(path_or_id: str | Path, device: str | torch.device = "cpu") -> DiffusionPipeline:
    """A saved :class:`ConceptDiffusionPipeline`, or any diffusers text-to-image pipeline (dir or hub id)."""
    index = Path(path_or_id) / "model_index.json"
    if index.exists() and json.loads(index.read_text()).get("_class_name") == ConceptDiffusionPipeline.__name__:
        pipe = ConceptDiffusionPipeline.from_pretrained(str(path_or_id))
    else:
        pipe = DiffusionPipeline.from_pretrained(str(path_or_id))
    return pipe.to(device)


def grid_image(images: torch.Tensor, cols: int) -> Image.Image:
    """PIL image tiling uint8 N×H×W×3 in rows of ``cols``."""
    return Image.fromarray(grid(images.cpu().numpy(), cols))


class DiffusionGenerator:
    """The ``diffusion`` generator: captions of the target concepts -> ``pipe`` -> uint8 N×R×R×3."""

    def __init__(self, pipe: DiffusionPipeline, task: Presence, cfg: DiffusionConfig, seed: int,
                 images: torch.Tensor | None, context: Sequence[str]) -> None:
        """``images``: the evaluated images (SDEdit starts from them); ``context``: their caption contexts."""
        if cfg.strength < 1 and images is None:
            raise ValueError(f"concepts.diffusion.strength={cfg.strength} edits the evaluated images (SDEdit), but the "
                             "generator was given none (GeneratorContext.images)")
        self.pipe = editing_pipeline(pipe) if cfg.strength < 1 else pipe
        self.task, self.cfg, self.seed = task, cfg, seed
        self.images = images if cfg.strength < 1 else None
        self.resolution = cfg.resolution
        self.context = list(context)

    @classmethod
    def build(cls, params: Mapping[str, Any], ctx: GeneratorContext) -> "DiffusionGenerator":
        """Load ``pretrained``, or train a :class:`ConceptDiffusionPipeline` on ``ctx.train()`` (saved to
        ``ctx.workdir``)."""
        cfg = DiffusionConfig.from_params(params)
        context = context_phrases(ctx.task, ctx.records, cfg.caption_context)
        if cfg.pretrained:
            return cls(load_pipeline(cfg.pretrained, ctx.device), ctx.task, cfg, ctx.seed, ctx.images, context)
        images, concepts, records = ctx.train()
        prompts = scene_captions(ctx.task, concepts, records, cfg)
        evaluated = captions(ctx.task, concept_matrix(ctx.task, ctx.records), context)  # permutations keep the length
        pipe = untrained_pipeline(cfg, ctx.task, ctx.world, [*prompts, *evaluated], ctx.seed).to(ctx.device)
        with contextlib.nullcontext() if ctx.live is None else ctx.live() as live:
            train_pipeline(pipe, images, prompts, cfg, ctx.seed, live, groups=captions(ctx.task, concepts))
        if ctx.workdir is not None:
            pipe.save_pretrained(ctx.workdir)
        return cls(pipe, ctx.task, cfg, ctx.seed, ctx.images, context)

    def __call__(self, concepts: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        seeds = [image_seed(self.seed, i) for i in index.tolist()]
        real = None if self.images is None else self.images[index]
        prompts = captions(self.task, concepts, [self.context[i] for i in index.tolist()])
        return sample_images(self.pipe, prompts, seeds, self.cfg, real)
