"""Text-to-image diffusion for DEPICT: a small pixel-space diffusers pipeline trained on the rendered
images and their concept captions, or any pretrained diffusers text-to-image pipeline.

:class:`ConceptDiffusionPipeline` is a ``diffusers.DiffusionPipeline`` (a ``UNet2DConditionModel`` on
RGB pixels, a small ``transformers`` CLIP text encoder, a word-level tokenizer over the caption
vocabulary, a DPM-Solver++ scheduler), so it saves and loads like any diffusers pipeline and is called
like Stable Diffusion: ``pipe(prompt=[...], num_inference_steps=..., guidance_scale=..., generator=[...],
output_type="pt")``. Training is DDPM denoising (v-prediction by default) with caption dropout for
classifier-free guidance.
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
    from diffusers import DDPMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler, UNet2DConditionModel
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
    from diffusers.utils.torch_utils import randn_tensor
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast
except ImportError as e:  # pragma: no cover - install problem
    raise ImportError("the diffusion generator needs diffusers and transformers: "
                      "pip install -e . (they are core dependencies)") from e

from ..models.training import augment
from ..params import ParamsError, check_keys
from ..render.preview import grid
from ..render.tasks import Presence
from .annotations import captions, vocabulary
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
    train_timesteps: int = 1000
    beta_schedule: str = "linear"
    prediction_type: str = "v_prediction"  # or "epsilon", "sample"; v degrades to blur, not noise, when undertrained
    snr_gamma: float = 0.0  # min-SNR-γ loss weighting (Hang et al. 2023; 5 in the paper); 0 = plain MSE
    log_every: int = 10  # dvclive loss logging period (steps)
    sample_every: int = 100  # dvclive sample-grid period (steps); 0 = only at the end
    # sampling
    inference_steps: int = 10
    guidance_scale: float = 2.0
    sample_batch_size: int = 64

    @classmethod
    def from_params(cls, p: Mapping[str, Any], where: str = "concepts.diffusion") -> "DiffusionConfig":
        check_keys(p, [f.name for f in fields(cls)], where)
        cfg = cls(**{k: tuple(v) if k == "channels" else v for k, v in p.items()})
        if cfg.resolution % 2 ** (len(cfg.channels) - 1):
            raise ParamsError(f"{where}.resolution={cfg.resolution} must be divisible by 2^(len(channels)-1) = "
                              f"{2 ** (len(cfg.channels) - 1)}")
        if len(cfg.channels) < 2 or any(c % 8 or c % cfg.attention_head_dim for c in cfg.channels):
            raise ParamsError(f"{where}.channels={list(cfg.channels)}: give >= 2 widths, each a multiple of 8 and of "
                              f"attention_head_dim={cfg.attention_head_dim}")
        if cfg.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ParamsError(f"{where}.prediction_type must be epsilon, v_prediction or sample, "
                              f"got {cfg.prediction_type!r}")
        if cfg.steps < 1 or cfg.batch_size < 1 or cfg.inference_steps < 1 or not 0 <= cfg.p_uncond < 1 \
                or not 0 <= cfg.ema_decay < 1 or cfg.snr_gamma < 0:
            raise ParamsError(f"{where}: need steps, batch_size, inference_steps >= 1, 0 <= p_uncond < 1, "
                              "0 <= ema_decay < 1 and snr_gamma >= 0")
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
    """Pixel-space text-to-image pipeline; images are float N×3×S×S in [0, 1] with S = ``unet.config.sample_size``."""

    def __init__(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer: PreTrainedTokenizerFast,
                 scheduler: DPMSolverMultistepScheduler) -> None:
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)

    def token_ids(self, prompts: Sequence[str]) -> torch.Tensor:
        """Int64 N×L token ids, padded to the tokenizer's ``model_max_length``."""
        return self.tokenizer(list(prompts), padding="max_length", truncation=True, return_tensors="pt",
                              max_length=self.tokenizer.model_max_length).input_ids.to(self.device)

    @torch.no_grad()
    def __call__(self, prompt: Sequence[str], height: int | None = None, width: int | None = None,
                 num_inference_steps: int = 10, guidance_scale: float = 1.0,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 output_type: str = "pt") -> ImagePipelineOutput:
        """Images of ``prompt``: float N×3×S×S in [0, 1] ("pt") or N×S×S×3 numpy ("np"); pass one generator per
        image for noise that does not depend on the batch; guidance_scale 1 = no classifier-free guidance."""
        size = self.unet.config.sample_size
        if (height or size, width or size) != (size, size):
            raise ValueError(f"this pipeline generates {size}×{size} images, not {height}×{width}")
        if output_type not in ("pt", "np"):
            raise ValueError(f"output_type must be 'pt' or 'np', got {output_type!r}")
        n = len(prompt)
        cond = self.text_encoder(self.token_ids(prompt)).last_hidden_state
        guided = guidance_scale != 1.0
        if guided:
            cond = torch.cat([self.text_encoder(self.token_ids([""] * n)).last_hidden_state, cond])
        x = randn_tensor((n, 3, size, size), generator=generator, device=self.device, dtype=self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        x = x * self.scheduler.init_noise_sigma
        for t in self.progress_bar(self.scheduler.timesteps):
            inp = self.scheduler.scale_model_input(torch.cat([x, x]) if guided else x, t)
            eps = self.unet(inp, t, encoder_hidden_states=cond).sample
            if guided:
                uncond, text = eps.chunk(2)
                eps = uncond + guidance_scale * (text - uncond)
            x = self.scheduler.step(eps, t, x).prev_sample
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
        unet = UNet2DConditionModel(
            sample_size=cfg.resolution, in_channels=3, out_channels=3, block_out_channels=tuple(cfg.channels),
            layers_per_block=cfg.layers_per_block, norm_num_groups=8, cross_attention_dim=cfg.text_dim,
            attention_head_dim=cfg.attention_head_dim,
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",))
    # Dynamic thresholding keeps the x0 predictions of early (noisiest) steps inside the pixel range.
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=cfg.train_timesteps, beta_schedule=cfg.beta_schedule, prediction_type=cfg.prediction_type,
        thresholding=True, sample_max_value=1.0)
    return ConceptDiffusionPipeline(unet, text, build_tokenizer(vocab, max_length), scheduler)


def snr_weights(scheduler: DDPMScheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ loss weights of timesteps ``t`` (N) for the scheduler's prediction type: min(SNR, γ) / SNR for
    epsilon, min(SNR, γ) / (SNR + 1) for v, min(SNR, γ) for the sample (so all weight the x0 error alike)."""
    abar = scheduler.alphas_cumprod.to(t.device)[t].to(torch.float32)
    snr = abar / (1 - abar)
    clipped = snr.clamp(max=gamma)
    kind = scheduler.config.prediction_type
    return clipped / snr if kind == "epsilon" else clipped / (snr + 1) if kind == "v_prediction" else clipped


def train_pipeline(pipe: ConceptDiffusionPipeline, images: torch.Tensor, prompts: Sequence[str], cfg: DiffusionConfig,
                   seed: int, live: Any | None = None, preview: int = 8,
                   callback: Callable[[int], None] | None = None) -> list[float]:
    """Train ``pipe`` in place on uint8 N×H×W×3 ``images`` (resized to ``cfg.resolution``) and their captions.

    All randomness (batches, flips, caption dropout, noise, timesteps) comes from a CPU generator seeded
    with ``seed``. With a dvclive ``live``, logs ``diffusion/loss`` every ``cfg.log_every`` steps and a grid
    of the first ``preview`` training images over samples from their captions every ``cfg.sample_every``
    steps and at the end (with the EMA weights, which the pipeline keeps at the end). ``callback(step)`` is called
    at the same steps with the EMA weights in place (e.g. to score samples). Returns the loss per step.
    """
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} captions")
    device = pipe.device
    images = images.to(device)
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
    order = torch.empty(0, dtype=torch.int64)
    losses = []
    pipe.unet.train()
    pipe.text_encoder.train()
    for step in range(1, cfg.steps + 1):
        if len(order) < bs:  # epochs of shuffled batches
            order = torch.randperm(len(images), generator=gen)
        idx, order = order[:bs].to(device), order[bs:]
        x = augment(resize(images[idx], cfg.resolution), gen, cfg.flip, 0) * 2 - 1
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
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        lr_sched.step()
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
                    fake = sample_images(pipe, prompts[:k], list(range(k)), cfg)
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


def sample_images(pipe: DiffusionPipeline, prompts: Sequence[str], seeds: Sequence[int], cfg: DiffusionConfig
                  ) -> torch.Tensor:
    """Uint8 N×S×S×3 images of ``prompts``; image i's noise comes from its own CPU generator seeded with
    ``seeds[i]``, so it does not depend on the batch it is generated in. ``cfg.sample_batch_size`` at a time."""
    pipe.set_progress_bar_config(disable=True)
    out = []
    for a in range(0, len(prompts), cfg.sample_batch_size):
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[a:a + cfg.sample_batch_size]]
        x = pipe(prompt=list(prompts[a:a + cfg.sample_batch_size]), num_inference_steps=cfg.inference_steps,
                 guidance_scale=cfg.guidance_scale, generator=gens, output_type="pt",
                 height=cfg.resolution, width=cfg.resolution).images
        out.append((x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1))
    return torch.cat(out) if out else torch.empty(0, cfg.resolution, cfg.resolution, 3, dtype=torch.uint8)


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

    def __init__(self, pipe: DiffusionPipeline, task: Presence, cfg: DiffusionConfig, seed: int) -> None:
        self.pipe, self.task, self.cfg, self.seed = pipe, task, cfg, seed
        self.resolution = cfg.resolution

    @classmethod
    def build(cls, params: Mapping[str, Any], ctx: GeneratorContext) -> "DiffusionGenerator":
        """Load ``pretrained``, or train a :class:`ConceptDiffusionPipeline` on ``ctx.train()`` (saved to
        ``ctx.workdir``)."""
        cfg = DiffusionConfig.from_params(params)
        if cfg.pretrained:
            return cls(load_pipeline(cfg.pretrained, ctx.device), ctx.task, cfg, ctx.seed)
        images, concepts = ctx.train()
        prompts = captions(ctx.task, concepts)
        vocab = vocabulary(ctx.task)
        longest = max(len(ids) for ids in build_tokenizer(vocab, 1 << 16)(prompts).input_ids)
        pipe = build_pipeline(cfg, vocab, longest, ctx.seed).to(ctx.device)
        with contextlib.nullcontext() if ctx.live is None else ctx.live() as live:
            train_pipeline(pipe, images, prompts, cfg, ctx.seed, live)
        if ctx.workdir is not None:
            pipe.save_pretrained(ctx.workdir)
        return cls(pipe, ctx.task, cfg, ctx.seed)

    def __call__(self, concepts: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        seeds = [image_seed(self.seed, i) for i in index.tolist()]
        return sample_images(self.pipe, captions(self.task, concepts), seeds, self.cfg)
