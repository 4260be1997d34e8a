"""The diffusion generator: trains and samples end to end on a tiny config, saves/loads, any diffusers pipeline."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from salbench.concepts import GeneratorContext, build_generator, captions, concept_matrix, vocabulary
from salbench.concepts.diffusion import ConceptDiffusionPipeline, DiffusionConfig, build_tokenizer, load_pipeline
from salbench.concepts.diffusion import build_pipeline as build_diffusion_pipeline

TINY = {"resolution": 16, "steps": 2, "batch_size": 4, "channels": [8, 16], "text_dim": 16, "text_layers": 1,
        "inference_steps": 2, "sample_batch_size": 5, "log_every": 1, "sample_every": 1}
# Latent diffusion: an autoencoder 16 px -> 8×8×4 latents, the UNet on the latents.
TINY_LATENT = {**TINY, "vae_channels": [8, 16], "vae_steps": 2, "vae_batch_size": 4}
# The caption also pooled into the timestep embedding (every ResNet block sees it).
TINY_POOLED = {**TINY, "pooled_caption": True}


def tiny_context(task, world, scenes, tmp: Path | None) -> GeneratorContext:
    arrays, records = scenes["train"]
    from dvclive import Live

    return GeneratorContext(
        task, world, scenes["test"][1],
        train=lambda: (torch.from_numpy(arrays["images"]), concept_matrix(task, records), records),
        seed=0, device=torch.device("cpu"), workdir=None if tmp is None else tmp / "model",
        live=None if tmp is None else (lambda: Live(str(tmp / "live"), save_dvc_exp=False, dvcyaml=None)))


@pytest.fixture(scope="module", params=[TINY, TINY_LATENT, TINY_POOLED], ids=["pixels", "latents", "pooled"])
def trained(request, task, world, scenes, tmp_path_factory) -> tuple:
    tmp = tmp_path_factory.mktemp("diffusion")
    return build_generator("diffusion", request.param, tiny_context(task, world, scenes, tmp)), tmp, request.param


def test_training_logs_with_dvclive_and_saves_a_diffusers_pipeline(trained) -> None:
    gen, tmp, params = trained
    parts = ["diffusion"] + (["autoencoder"] if "vae_channels" in params else [])
    for part in parts:
        loss = (tmp / f"live/plots/metrics/{part}/loss.tsv").read_text().splitlines()
        assert loss[0] == "step\tloss" and [r.split("\t")[0] for r in loss[1:]] == ["1", "2"]
        assert all(torch.tensor(float(r.split("\t")[1])).isfinite() for r in loss[1:])
    assert (tmp / "live/plots/images/diffusion/samples/step000002.png").exists()
    assert (tmp / "model/model_index.json").exists() and isinstance(gen.pipe, ConceptDiffusionPipeline)
    assert (gen.pipe.vae is not None) == ("vae_channels" in params)
    assert (tmp / "model/vae").exists() == ("vae_channels" in params)
    assert gen.pipe.unet.config.addition_embed_type == ("text" if params.get("pooled_caption") else None)
    if gen.pipe.vae is not None:
        assert (tmp / "live/plots/images/autoencoder/reconstructions.png").exists()
        assert gen.pipe.unet.config.sample_size == 8 and gen.pipe.unet.config.in_channels == 4


def test_sampling_is_batched_seeded_per_image_and_shaped(task, scenes, trained) -> None:
    gen = trained[0]
    c = concept_matrix(task, scenes["test"][1])
    idx = torch.arange(len(c))
    out = gen(c, idx)
    assert out.shape == (len(c), 16, 16, 3) and out.dtype == torch.uint8
    assert torch.equal(out, gen(c, idx))
    # Image i's noise depends only on (seed, index i): the same row in a different batch gives the same image.
    sub = gen(c[[6, 2]], idx[[6, 2]])
    assert (sub.int() - out[[6, 2]].int()).abs().max() <= 1
    # A different caption on the same noise gives a different image (the text conditions the UNet).
    other = c.clone()
    other[:, 0] = ~other[:, 0]
    assert not torch.equal(gen(other, idx), out)


def test_training_is_deterministic_given_the_seed(task, world, scenes, trained) -> None:
    gen, _, params = trained
    again = build_generator("diffusion", params, tiny_context(task, world, scenes, None))
    for a, b in zip(gen.pipe.components.values(), again.pipe.components.values()):
        if isinstance(a, torch.nn.Module):
            assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_saved_pipeline_loads_through_pretrained_and_samples_the_same(task, world, scenes, trained) -> None:
    gen, tmp, params = trained
    loaded = build_generator("diffusion", {**params, "pretrained": str(tmp / "model")},
                             tiny_context(task, world, scenes, None))
    c = concept_matrix(task, scenes["test"][1])
    idx = torch.arange(len(c))
    assert torch.equal(loaded(c, idx), gen(c, idx))


def test_any_diffusers_text_to_image_pipeline_can_be_loaded(task, world, scenes, tmp_path) -> None:
    """A tiny Stable Diffusion pipeline (latent UNet + VAE) built and saved here stands in for a hub checkpoint."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    vocab = vocabulary(task)
    sd = StableDiffusionPipeline(
        vae=AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                          block_out_channels=(8, 16), latent_channels=4, norm_num_groups=8, layers_per_block=1),
        text_encoder=CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab) + 2, hidden_size=16, intermediate_size=32,
                                                  num_hidden_layers=1, num_attention_heads=2,
                                                  max_position_embeddings=16, bos_token_id=0, eos_token_id=0)),
        tokenizer=build_tokenizer(vocab, 16),
        unet=UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                  layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                  attention_head_dim=8, norm_num_groups=8),
        scheduler=DDIMScheduler(steps_offset=1, clip_sample=False), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    sd.save_pretrained(tmp_path / "sd")
    assert type(load_pipeline(tmp_path / "sd")) is StableDiffusionPipeline
    gen = build_generator("diffusion", {"pretrained": str(tmp_path / "sd"), "resolution": 16, "inference_steps": 2},
                          tiny_context(task, world, scenes, None))
    c = concept_matrix(task, scenes["test"][1])[:3]
    out = gen(c, torch.arange(3))
    assert out.shape == (3, 16, 16, 3) and torch.equal(out, gen(c, torch.arange(3)))
    assert captions(task, c)[0].startswith(("a red cube", "no red cube"))
    # strength < 1: the same checkpoint edits the evaluated images through diffusers' image-to-image pipeline
    ctx = tiny_context(task, world, scenes, None)
    ctx.images = torch.from_numpy(scenes["test"][0]["images"])
    edit = build_generator("diffusion", {"pretrained": str(tmp_path / "sd"), "resolution": 16, "inference_steps": 4,
                                         "strength": 0.5}, ctx)
    edited = edit(c, torch.arange(3))
    assert edited.shape == (3, 16, 16, 3) and torch.equal(edited, edit(c, torch.arange(3)))
    assert not torch.equal(edited, out)


def test_an_untrained_pipeline_saved_locally_loads_through_pretrained_and_is_reproducible(task, world, scenes,
                                                                                         tmp_path) -> None:
    """Random weights, no training: save_pretrained to a directory, then concepts.diffusion.pretrained -> the
    generator interface: uint8 N×R×R×3, the same images for the same seed, other images for another seed."""
    cfg = DiffusionConfig.from_params(TINY)
    build_diffusion_pipeline(cfg, vocabulary(task), 15, seed=7).save_pretrained(tmp_path / "pipe")
    params = {**TINY, "pretrained": str(tmp_path / "pipe")}
    c = concept_matrix(task, scenes["test"][1])[:4]
    idx = torch.arange(4)
    a = build_generator("diffusion", params, tiny_context(task, world, scenes, None))
    out = a(c, idx)
    assert out.shape == (4, 16, 16, 3) and out.dtype == torch.uint8 and out.float().std() > 0
    b = build_generator("diffusion", params, tiny_context(task, world, scenes, None))
    assert torch.equal(b(c, idx), out)  # a fresh load, the same seed: the same images
    ctx = tiny_context(task, world, scenes, None)
    ctx.seed = 1
    assert not torch.equal(build_generator("diffusion", params, ctx)(c, idx), out)


def test_min_snr_weights_hand_computed() -> None:
    from diffusers import DDPMScheduler

    from salbench.concepts.diffusion import snr_weights

    t = torch.tensor([0, 500, 999])
    for kind in ("epsilon", "v_prediction", "sample"):
        sched = DDPMScheduler(num_train_timesteps=1000, prediction_type=kind)
        abar = sched.alphas_cumprod[t]
        snr = abar / (1 - abar)
        w = snr_weights(sched, t, 5.0)
        expected = {"epsilon": snr.clamp(max=5) / snr, "v_prediction": snr.clamp(max=5) / (snr + 1),
                    "sample": snr.clamp(max=5)}[kind]
        torch.testing.assert_close(w, expected)
        assert snr[0] > 5 > snr[2]  # the clip binds at low noise only
    torch.testing.assert_close(snr_weights(DDPMScheduler(prediction_type="v_prediction"), t[2:], 5.0),
                               (snr / (snr + 1))[2:])  # below γ, v-prediction's weight is SNR / (SNR + 1)


@pytest.mark.parametrize(("params", "match"), [
    ({"stesp": 3}, "did you mean 'steps'"),
    ({"channels": [8]}, "give >= 2 widths"),
    ({"channels": [12, 16]}, "multiple of 8"),
    ({"resolution": 18, "channels": [8, 16, 16]}, "divisible by 2"),
    ({"p_uncond": 1.0}, "p_uncond < 1"),
    ({"snr_gamma": -1.0}, "snr_gamma >= 0"),
    ({"vae_channels": [8, 12]}, "multiples of 8"),
    ({"resolution": 18, "vae_channels": [8, 16, 16]}, "divisible by 2\\^\\(len\\(vae_channels\\)-1\\)"),
    ({"resolution": 16, "vae_channels": [8, 16, 16], "channels": [8, 16, 16, 16]}, "times the autoencoder"),
    ({"vae_kl": -1.0}, "vae_kl >= 0"),
    ({"vae_loss": "l2"}, "vae_loss must be mse or l1"),
    ({"vae_saturation_weight": -1.0}, "vae_saturation_weight >= 0"),
    ({"caption_context": "objects"}, "caption_context must be one of \\['none', 'colors'\\]"),
])
def test_bad_diffusion_params_are_rejected(params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DiffusionConfig.from_params(params)


class NoisyOracle(torch.nn.Module):
    """The ideal prediction (noise, velocity or clean sample) for a one-image data set, plus a fixed error of
    size ``err`` in noise units, as a trained UNet would make."""

    def __init__(self, x0: torch.Tensor, alphas_cumprod: torch.Tensor, prediction_type: str, err: float) -> None:
        super().__init__()
        self.config = SimpleNamespace(sample_size=x0.shape[-1], in_channels=x0.shape[1])
        self.x0, self.abar, self.kind, self.err = x0, alphas_cumprod, prediction_type, err
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the pipeline a device and dtype

    @property
    def dtype(self) -> torch.dtype:
        return self.anchor.dtype

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def forward(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor) -> SimpleNamespace:
        alpha, sigma = self.abar[int(t)].sqrt(), (1 - self.abar[int(t)]).sqrt()
        wobble = torch.sin(torch.arange(x.numel(), dtype=torch.float32) * 12.9898).view_as(x)  # deterministic error
        eps = (x - alpha * self.x0) / sigma + self.err * wobble
        x0 = (x - sigma * eps) / alpha
        target = {"epsilon": eps, "v_prediction": alpha * eps - sigma * x0, "sample": x0}
        return SimpleNamespace(sample=target[self.kind])


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_few_step_sampling_recovers_the_data_from_a_nearly_ideal_model(task, prediction_type: str) -> None:
    """The pipeline's sampler (DPM-Solver++, 10 steps, thresholding) turns a 5%-wrong ideal predictor for a
    one-image data set into that image, for each prediction type the training supports."""
    cfg = DiffusionConfig.from_params({"resolution": 8, "channels": [8, 16], "text_dim": 16, "guidance_scale": 1.0,
                                       "prediction_type": prediction_type})
    pipe = build_diffusion_pipeline(cfg, vocabulary(task), 15, seed=0)
    x0 = torch.linspace(-0.8, 0.8, 3 * 8 * 8).view(1, 3, 8, 8)
    oracle = NoisyOracle(x0, pipe.scheduler.alphas_cumprod, prediction_type, err=0.05)
    pipe = ConceptDiffusionPipeline(oracle, pipe.text_encoder, pipe.tokenizer, pipe.scheduler)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(["a"], num_inference_steps=10, generator=torch.Generator().manual_seed(0)).images
    assert (out * 2 - 1 - x0).abs().mean() < 0.05
    far = NoisyOracle(x0 + 0.5, pipe.scheduler.alphas_cumprod, prediction_type, err=0.05)
    pipe = ConceptDiffusionPipeline(far, pipe.text_encoder, pipe.tokenizer, pipe.scheduler)
    pipe.set_progress_bar_config(disable=True)
    assert (pipe(["a"], num_inference_steps=10, generator=torch.Generator().manual_seed(0)).images * 2 - 1
            - x0).abs().mean() > 0.3  # the output follows the model, it is not a constant


class ZeroNoise(NoisyOracle):
    """Predicts no noise at all (x0 = x_t / alpha_t): DPM-Solver++ then only rescales, and the output is the
    starting latent divided by its alpha, whatever the number of steps."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(sample=torch.zeros_like(x))


@pytest.mark.parametrize("strength", [0.1, 0.3, 0.7])
def test_sdedit_starts_from_the_image_noised_to_the_strengths_step_hand_computed(task, strength: float) -> None:
    """strength s < 1: sampling starts at timestep T_k, k = 10 - round(10 s), from alpha_k B + sigma_k noise; with a
    model that predicts no noise the output is B + (sigma_k / alpha_k) noise, the noise of the image's generator."""
    cfg = DiffusionConfig.from_params({"resolution": 8, "channels": [8, 16], "text_dim": 16, "guidance_scale": 1.0,
                                       "prediction_type": "epsilon"})
    pipe = build_diffusion_pipeline(cfg, vocabulary(task), 15, seed=0)
    pipe = ConceptDiffusionPipeline(ZeroNoise(torch.zeros(1, 3, 8, 8), pipe.scheduler.alphas_cumprod, "epsilon", 0),
                                    pipe.text_encoder, pipe.tokenizer, pipe.scheduler)
    pipe.set_progress_bar_config(disable=True)
    image = torch.linspace(0.2, 0.8, 2 * 3 * 8 * 8).view(2, 3, 8, 8)
    out = pipe(["a", "no"], num_inference_steps=10, image=image, strength=strength,
               generator=[torch.Generator().manual_seed(i) for i in range(2)]).images
    pipe.scheduler.set_timesteps(10)
    t = int(pipe.scheduler.timesteps[10 - round(10 * strength)])
    abar = pipe.scheduler.alphas_cumprod[t]
    noise = torch.stack([torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(2)])
    want = ((image * 2 - 1 + (1 / abar - 1).sqrt() * noise) / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(out, want, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="strength"):
        pipe(["a"], image=image[:1])  # an image without strength < 1
    with pytest.raises(ValueError, match="strength"):
        pipe(["a"], strength=0.5)  # strength < 1 without an image


def test_the_sdedit_generator_edits_the_evaluated_images(task, world, scenes, tmp_path) -> None:
    """concepts.diffusion.strength < 1: g edits each evaluated image (GeneratorContext.images) instead of drawing
    from noise; reproducible, batch-independent, caption-dependent, and it refuses to run without the images."""
    cfg = DiffusionConfig.from_params(TINY_LATENT)
    build_diffusion_pipeline(cfg, vocabulary(task), 15, seed=7).save_pretrained(tmp_path / "pipe")
    params = {**TINY_LATENT, "pretrained": str(tmp_path / "pipe"), "strength": 0.5, "inference_steps": 4}
    ctx = tiny_context(task, world, scenes, None)
    ctx.images = torch.from_numpy(scenes["test"][0]["images"])
    gen = build_generator("diffusion", params, ctx)
    c = concept_matrix(task, scenes["test"][1])
    idx = torch.arange(len(c))
    out = gen(c, idx)
    assert out.shape == (len(c), 16, 16, 3) and out.dtype == torch.uint8
    assert torch.equal(out, build_generator("diffusion", params, ctx)(c, idx))
    assert (gen(c[[5, 1]], idx[[5, 1]]).int() - out[[5, 1]].int()).abs().max() <= 1
    other = c.clone()
    other[:, 0] = ~other[:, 0]
    assert not torch.equal(gen(other, idx), out)
    moved = ctx.images.clone()
    moved[0] = 255 - moved[0]
    ctx.images = moved
    assert not torch.equal(build_generator("diffusion", params, ctx)(c[:1], idx[:1]), out[:1])  # it starts from them
    ctx.images = None
    with pytest.raises(ValueError, match="GeneratorContext.images"):
        build_generator("diffusion", params, ctx)


def test_training_keeps_the_ema_of_the_weights_hand_computed(task) -> None:
    """EMA with warm-up: decay_k = min(ema_decay, k / (k + 10)) after step k; the raw trajectory is unaffected."""
    from salbench.concepts.diffusion import train_pipeline

    images = torch.randint(0, 256, (8, 16, 16, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    prompts = captions(task, torch.rand(8, 4, generator=torch.Generator().manual_seed(1)) < 0.5)

    def weights(steps: int, ema: float) -> torch.Tensor:
        cfg = DiffusionConfig.from_params({**TINY, "steps": max(steps, 1), "ema_decay": ema})
        pipe = build_diffusion_pipeline(cfg, vocabulary(task), 15, seed=0)
        if steps:
            train_pipeline(pipe, images, prompts, cfg, seed=3)
        return torch.nn.utils.parameters_to_vector(pipe.unet.parameters()).detach()

    p0, p1, p2 = weights(0, 0.0), weights(1, 0.0), weights(2, 0.0)  # warm-up lr: step 1 is the same in both runs
    expected = p0.lerp(p1, 1 - 1 / 11).lerp(p2, 1 - 2 / 12)
    torch.testing.assert_close(weights(2, 0.99), expected, rtol=0, atol=1e-6)


def test_the_autoencoder_learns_to_reconstruct_and_scales_latents_to_unit_variance(task) -> None:
    """train_autoencoder: the reconstruction error of the training images falls well below the untrained one's, and
    the scaling factor makes the training latents' std exactly 1 (what the UNet's noise schedule assumes)."""
    from salbench.concepts.diffusion import _scaled, encode, reconstruct, train_autoencoder

    cfg = DiffusionConfig.from_params({**TINY_LATENT, "vae_steps": 80, "vae_batch_size": 8, "vae_lr": 0.005,
                                       "sample_every": 30})
    g = torch.Generator().manual_seed(0)
    # Two-colour images: a random colour left of a random column, another right of it.
    cols = torch.randint(0, 256, (16, 2, 3), generator=g, dtype=torch.uint8)
    cut = torch.randint(4, 12, (16,), generator=g)
    left = (torch.arange(16)[None, :] < cut[:, None])[:, None, :, None]  # N×1×W×1
    images = torch.where(left, cols[:, None, None, 0], cols[:, None, None, 1]).expand(16, 16, 16, 3).contiguous()
    vae = build_diffusion_pipeline(cfg, vocabulary(task), 15, seed=0).vae
    x = _scaled(images, 16)

    def error() -> float:
        with torch.no_grad():
            return float((vae.decode(vae.encode(x).latent_dist.mean).sample - x).pow(2).mean())

    before = error()
    called = []  # (step, training mode) of each callback
    losses = train_autoencoder(vae, images, cfg, seed=0, callback=lambda step: called.append((step, vae.training)))
    assert len(losses) == 80 and error() < 0.25 * before
    assert encode(vae, x).std().item() == pytest.approx(1.0, abs=1e-5)
    assert not vae.training
    assert called == [(30, False), (60, False), (80, False)]
    # reconstruct: the decoded posterior means as uint8 images, in batches of any size, at the requested resolution
    rec = reconstruct(vae, images, 16, batch_size=5)
    assert rec.shape == (16, 16, 16, 3) and rec.dtype == torch.uint8
    with torch.no_grad():
        expected = ((vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1) + 1) * 127.5).round()
    assert (rec.permute(0, 3, 1, 2).float() - expected).abs().max() <= 1  # float rounding of 127.5-steps only
    assert (rec.float() - images.float()).pow(2).mean() / 127.5 ** 2 == pytest.approx(error(), rel=0.05)


def test_reconstruction_loss_weights_coloured_pixels() -> None:
    """Hand-computed: a grey pixel (saturation 0) and a pure red one (saturation 1), each off by 0.5 per channel."""
    from salbench.concepts.diffusion import reconstruction_loss

    x = torch.tensor([[0.2, 0.2, 0.2], [1.0, -1.0, -1.0]]).T.reshape(1, 3, 1, 2)  # N×3×H×W: grey, red
    rec = x + 0.5
    assert reconstruction_loss(rec, x).item() == pytest.approx(0.25)
    assert reconstruction_loss(rec, x, "l1").item() == pytest.approx(0.5)
    # weights 1 (grey) and 1 + 3 × 1 (red): mean error (1 + 4) / 2 × 0.25
    assert reconstruction_loss(rec, x, "mse", 3.0).item() == pytest.approx(0.625)
    assert reconstruction_loss(rec, x, "l1", 3.0).item() == pytest.approx(1.25)
    assert reconstruction_loss(x, x, "l1", 3.0).item() == 0


def test_caption_weights_make_every_caption_equally_likely() -> None:
    from salbench.concepts.diffusion import caption_weights

    prompts = ["a"] * 6 + ["b"] * 3 + ["c"]
    w = caption_weights(prompts, 1.0)
    assert w.sum().item() == pytest.approx(1.0)
    per_caption = {p: sum(w[i].item() for i, q in enumerate(prompts) if q == p) for p in "abc"}
    assert per_caption == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert torch.allclose(caption_weights(prompts, 0.0), torch.full((10,), 0.1))  # 0: every image alike
    half = caption_weights(prompts, 0.5)  # in between: a's images 6^-0.5 against c's 1
    assert half[0].item() / half[-1].item() == pytest.approx(6 ** -0.5, rel=1e-6)
    with pytest.raises(Exception, match="0 <= balance <= 1"):
        DiffusionConfig.from_params({"balance": 1.5})


def test_the_colors_context_tells_each_caption_the_other_objects_and_no_permutation_changes_it(
        task, world, scenes, monkeypatch) -> None:
    """concepts.diffusion.caption_context: colors. Training captions and generated rows' captions end with their
    scene's 'other objects: ...' (colours of the objects that carry no concept); `balance` still counts concept
    combinations; permuting a concept changes only its own phrase; the tokenizer knows every word; 'none' keeps
    the plain captions."""
    import salbench.concepts.diffusion as diffusion
    from salbench.concepts import context_phrases

    records = scenes["test"][1]
    expected = [sorted(o["color"] for o in r["objects"] if not any(task.present({"objects": [o]}).values()))
                for r in records]
    assert context_phrases(task, records, "colors") == [
        "other objects: " + (", ".join(e) if e else "none") for e in expected]
    assert any(expected)  # ("other objects: none": the doctest of context_phrases)
    seen: dict[str, list[str]] = {}
    real_train = diffusion.train_pipeline
    monkeypatch.setattr(diffusion, "train_pipeline", lambda pipe, images, prompts, *a, **k: (
        seen.__setitem__("train", list(prompts)), real_train(pipe, images, prompts, *a, **k))[1])
    real_weights = diffusion.caption_weights
    monkeypatch.setattr(diffusion, "caption_weights", lambda groups, balance: (
        seen.__setitem__("balanced", list(groups)), real_weights(groups, balance))[1])
    gen = build_generator("diffusion", {**TINY, "caption_context": "colors", "balance": 1.0},
                          tiny_context(task, world, scenes, None))
    train_records = scenes["train"][1]
    train_concepts = concept_matrix(task, train_records)
    assert seen["train"] == captions(task, train_concepts, context_phrases(task, train_records, "colors"))
    assert seen["balanced"] == captions(task, train_concepts)  # balance counts concept combinations, not contexts
    monkeypatch.setattr(diffusion, "sample_images", lambda pipe, prompts, *a: seen.__setitem__("sample", prompts)
                        or torch.zeros(len(prompts), 16, 16, 3, dtype=torch.uint8))
    c = concept_matrix(task, records)
    idx = torch.tensor([3, 0, 7])
    flipped = c[idx].clone()
    flipped[:, 0] = ~flipped[:, 0]
    gen(flipped, idx)
    base = captions(task, c[idx], [context_phrases(task, records, "colors")[i] for i in idx.tolist()])
    for before, after in zip(base, seen["sample"]):
        diff = [k for k, (a, b) in enumerate(zip(before.split(", "), after.split(", "))) if a != b]
        assert diff == [0] and len(before.split(", ")) == len(after.split(", "))
    tok = gen.pipe.tokenizer
    ids = tok(seen["train"] + seen["sample"]).input_ids
    assert all(tok.unk_token_id not in row for row in ids)
    plain = build_generator("diffusion", TINY, tiny_context(task, world, scenes, None))
    plain(c[idx], idx)
    assert seen["sample"] == captions(task, c[idx])
    assert "other" not in plain.pipe.tokenizer.get_vocab()
