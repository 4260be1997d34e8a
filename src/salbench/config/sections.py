"""pydantic models of every params.yaml section: keys, types and ranges (unknown keys are errors).

The models check structure; :mod:`salbench.config.validate` adds what needs several keys or the registries
(method and metric entries, task definitions, cross-section names) and turns every error into a ParamsError.
Keys and defaults mirror what each stage reads (``TrainConfig``, ``DiffusionConfig``, ``World``, ...);
tests/reliability/test_params.py checks that they stay in step.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Tag

from ..attribution import METHODS
from ..attribution.spec import FAMILIES
from ..attribution.wrappers import COMBINATIONS, TARGETS
from ..plots import FIGURES
from ..render.tasks import TASKS
from ..render.world import KNOWN
from .declare import OneOf

SPLITS = ("train", "val", "test")
# salbench.concepts.GENERATORS, named here so that checking params does not import diffusers' dependencies.
GENERATORS = ("renderer", "diffusion")

PosInt = Annotated[int, Ge(1)]
NonNegInt = Annotated[int, Ge(0)]
PosFloat = Annotated[float, Gt(0)]
NonNegFloat = Annotated[float, Ge(0)]
Fraction = Annotated[float, Ge(0), Le(1)]
Split = Literal["train", "val", "test"]
ObjectAttribute = Literal["shape", "color", "material", "size"]
_DEVICE = re.compile(r"^(cpu|auto|mps|cuda(:\d+)?)$")


def _device(name: str) -> str:
    if not _DEVICE.match(name):
        raise ValueError(f"{name!r} is not a device; use cpu, cuda, cuda:N or auto")
    return name


def names(choices: Any, what: str = "name") -> AfterValidator:
    """A str (or list of str) validator: each must be one of ``choices`` (a Registry or names)."""
    return AfterValidator(OneOf(choices, what))


Device = Annotated[str, AfterValidator(_device)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)


# ---- render and tasks -------------------------------------------------------------------------------------------

class Splits(Section):
    train: PosInt
    val: PosInt
    test: PosInt


class Scene(Section):
    """What a scene holds and how it is seen: ``render.*``, and per task ``tasks.<name>.world`` (given keys only)."""

    min_objects: PosInt = 3
    max_objects: PosInt = 8
    shapes: Annotated[list[str], names(KNOWN["shape"], "shape")] = list(KNOWN["shape"])
    colors: Annotated[list[str], names(KNOWN["color"], "color")] = list(KNOWN["color"])
    materials: Annotated[list[str], names(KNOWN["material"], "material")] = list(KNOWN["material"])
    sizes: Annotated[list[str], names(KNOWN["size"], "size")] = list(KNOWN["size"])
    extent: PosFloat = 3.0
    min_distance: NonNegFloat = 0.25
    min_pixels: PosInt = 40
    camera_jitter: NonNegFloat = 0.5
    zoom: PosFloat = 1.0
    light_jitter: NonNegFloat = 1.0
    max_tries: PosInt = 200


class Render(Scene):
    seed: int = 0
    resolution: Annotated[int, Ge(32)] = 128
    splits: Splits
    tasks: Annotated[list[str], names(TASKS)] = []  # rendered tasks; image folders are under `folders`
    workers: PosInt = 1
    preview: NonNegInt = 16


class UniqueQueryTask(Section):
    """tasks.unique-query: exactly one object matches ``query``; the label is its ``target`` attribute."""

    query: dict[ObjectAttribute, str] = {"material": "metal"}
    target: ObjectAttribute = "color"
    world: Scene | None = None  # render.* keys this task renders with instead (not resolution)


class Spurious(Section):
    concept: str | None = None
    p: Fraction = 0.5
    splits: list[Split] = ["train", "val"]


class PresenceTask(Section):
    """tasks.presence: the label is a boolean ``rule`` over named ``concepts`` (attribute queries)."""

    concepts: dict[str, dict[ObjectAttribute, str]]
    rule: str
    spurious: Spurious | None = None
    presence: Fraction = 0.5
    world: Scene | None = None


class VQATask(Section):
    """tasks.vqa-simple / tasks.vqa-complex: questions per scene (salbench.vqa.QuestionGenerator); the family
    names are checked when the task is built."""

    questions_per_image: PosInt = 5
    families: list[str] | None = None
    margin: NonNegFloat = 0.2
    separation: NonNegFloat = 0.4
    seed: int = 0
    tries: PosInt = 4
    reset_every: PosInt = 250
    world: Scene | None = None


# tasks.<name> params per registered task (salbench.render.TASKS)
TASK_PARAMS: dict[str, type[Section]] = {"unique-query": UniqueQueryTask, "presence": PresenceTask,
                                         "vqa-simple": VQATask, "vqa-complex": VQATask}


class FolderTask(Section):
    """folders.<task>: an image folder imported as a task (salbench.data.FolderSpec; stage import@<task>)."""

    root: str  # a folder (must exist); csv and masks are relative to it
    csv: str | None = None  # columns path,label[,split][,mask][,<concepts>...]
    masks: str | None = None  # a folder under root with <image's relative path>.png masks
    image_size: Annotated[int, Ge(8)] | None = None  # resize every image to this square size
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"  # of that resize (masks: nearest)
    classes: Annotated[list[str], MinLen(2)] | None = None  # class order (the model's outputs); default sorted
    concepts: list[str] = []  # CSV columns of concept labels (DEPICT)


# ---- train --------------------------------------------------------------------------------------------------------

class TrainSettings(Section):
    """salbench.models.TrainConfig."""

    epochs: NonNegInt = 10
    batch_size: PosInt = 64
    lr: PosFloat = 2e-3
    weight_decay: NonNegFloat = 0.05
    warmup_epochs: NonNegFloat = 1.0
    label_smoothing: Annotated[float, Ge(0), Lt(1)] = 0.0
    grad_clip: NonNegFloat = 1.0
    flip: bool = True
    shift: NonNegInt = 0
    stop_at_train_accuracy: Fraction = 0.0
    checkpoint_epochs: list[PosInt] = []
    eval_batch_size: PosInt = 250


class ModelSpec(Section):
    """salbench.models.as_spec: a registered arch or timm name, weights to start from."""

    arch: str | None = None
    kwargs: dict[str, Any] = {}
    pretrained: bool | str | None = None
    pretrained_file: str | None = None  # a local weights file (must exist)
    checkpoint: str | None = None  # a salbench checkpoint dir (must exist when the train stage runs)
    mean: list[float] | None = None
    std: list[float] | None = None


class RandomLabels(TrainSettings):
    n_train: NonNegInt = 0


class TrainModel(TrainSettings):
    model: str | ModelSpec | None = None
    random_labels: RandomLabels | None = None


class VQATrainModel(TrainModel):
    """train.vqa_models.<name>: also ``group_questions`` (salbench.models.fit_questions' ``group``)."""

    group_questions: PosInt = 1  # batches take each image's questions in runs of this many (1: independently)


class ExternalModel(Section):
    """train.models.<name> with source: checkpoint (salbench.models.external): packaged, not trained."""

    source: Literal["checkpoint"]
    timm: str | None = None  # a timm name, with weights
    entry: str | None = None  # "package.module:function" returning an nn.Module
    torchscript: str | None = None  # a TorchScript file (must exist)
    weights: str | None = None  # a state dict file (.safetensors, .pt, .pth; must exist)
    kwargs: dict[str, Any] = {}
    input_size: PosInt
    mean: Annotated[list[float], MinLen(3)] = [0.0, 0.0, 0.0]
    std: Annotated[list[float], MinLen(3)] = [1.0, 1.0, 1.0]
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"  # must match the task's import
    random_labels: RandomLabels | None = None


def _model_source(v: Any) -> str:
    """The union tag of a train.models entry (the class name, as validate's error paths expect)."""
    if v is None:
        return "None"
    return "ExternalModel" if isinstance(v, dict) and v.get("source") == "checkpoint" else "TrainModel"


class Train(Section):
    seed: int = 0
    device: Device = "cpu"
    tasks: list[str] = []
    min_test_accuracy: Fraction | dict[str, Fraction] = 0.0
    models: dict[str, Annotated[Annotated[TrainModel, Tag("TrainModel")] | Annotated[ExternalModel, Tag("ExternalModel")]
                                | Annotated[None, Tag("None")], Discriminator(_model_source)]] = {}
    vqa_tasks: list[str] = []  # question-conditioned models (stage train_vqa)
    vqa_min_test_accuracy: dict[str, Fraction | dict[str, Fraction]] = {}
    vqa_models: dict[str, VQATrainModel | None] = {}


# ---- concepts (DEPICT) ---------------------------------------------------------------------------------------------

class RendererGenerator(Section):
    tries: PosInt = 20


class Diffusion(Section):
    """salbench.concepts.diffusion.DiffusionConfig."""

    pretrained: str | None = None  # a diffusers pipeline dir (must exist) or a hub id `org/name`
    resolution: PosInt = 32
    steps: PosInt = 300
    batch_size: PosInt = 32
    lr: PosFloat = 1e-3
    weight_decay: NonNegFloat = 0.01
    warmup_steps: NonNegInt = 20
    grad_clip: NonNegFloat = 1.0
    ema_decay: Annotated[float, Ge(0), Lt(1)] = 0.99
    p_uncond: Annotated[float, Ge(0), Lt(1)] = 0.1
    flip: bool = True
    channels: list[PosInt] = [32, 64, 64]
    layers_per_block: PosInt = 1
    attention_head_dim: PosInt = 8
    text_dim: PosInt = 64
    text_layers: PosInt = 2
    text_heads: PosInt = 2
    pooled_caption: bool = False
    balance: Annotated[float, Ge(0), Le(1)] = 0.0
    train_timesteps: PosInt = 1000
    beta_schedule: str = "linear"
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "v_prediction"
    log_every: PosInt = 10
    sample_every: NonNegInt = 100
    inference_steps: PosInt = 10
    guidance_scale: NonNegFloat = 2.0
    strength: Annotated[float, Gt(0), Le(1)] = 1.0  # 1 = text-to-image; < 1 = SDEdit from the evaluated image
    sample_batch_size: PosInt = 64
    caption_context: Literal["none", "colors"] = "none"  # salbench.concepts.annotations.CAPTION_CONTEXTS
    snr_gamma: NonNegFloat = 0.0  # min-SNR-γ loss weighting; 0 = plain MSE
    vae_channels: list[PosInt] = []  # AutoencoderKL widths: latent diffusion; [] = pixel space
    latent_channels: PosInt = 4
    vae_steps: PosInt = 500
    vae_batch_size: PosInt = 32
    vae_lr: PosFloat = 1e-3
    vae_kl: NonNegFloat = 1e-6
    vae_loss: Literal["mse", "l1"] = "mse"
    vae_saturation_weight: NonNegFloat = 0.0  # pixel weight 1 + this × colour saturation


class ConceptClassifier(TrainSettings):
    """concepts.h: the model spec's arch and kwargs, its input resolution, and TrainConfig settings."""

    arch: str = "resnet-small"
    kwargs: dict[str, Any] = {}
    resolution: PosInt | None = None


class DepictChecks(Section):
    """concepts.checks: thresholds (AUROC units) of DEPICT's checks 1 and 2 (off and on the permuted concept) above
    which an importance is untrusted."""

    max_gap: Annotated[float, Ge(0), Le(1)] = 0.1
    max_other: Annotated[float, Ge(0), Le(1)] = 0.1
    max_own: Annotated[float, Ge(0), Le(1)] = 0.1


class Concepts(Section):
    task: str = "presence"
    split: Split = "test"
    n_images: NonNegInt = 0
    concepts: list[str] | None = None
    permutations: PosInt = 3
    seed: int = 0
    device: Device = "cpu"
    threads: NonNegInt = 0
    generators: Annotated[list[str], names(GENERATORS, "generator")] = ["renderer"]
    models: list[str] = []
    batch_size: PosInt = 250
    preview: NonNegInt = 8
    saliency: Annotated[str, names(METHODS)] = "gradcam"
    checks: DepictChecks | None = None
    renderer: RendererGenerator | None = None
    diffusion: Diffusion | None = None
    h: ConceptClassifier | None = None


# ---- attribute ----------------------------------------------------------------------------------------------------

class RayCluster(Section):
    """attribute.ray: run the stage's jobs on Ray (salbench.parallel.RayExecutor)."""

    address: str | None = None  # an existing cluster (host:port, or auto); None: a local instance
    max_retries: NonNegInt = 3
    cpus_per_task: PosFloat = 1.0
    gpus_per_task: NonNegFloat | None = None  # None: 1 when the stage's device is CUDA, else 0


class Attribute(Section):
    tasks: list[str] = []
    seed: int = 0
    device: Device = "cpu"
    batch_size: PosInt = 32
    split: Split = "test"
    checkpoint: str = "final"
    explain: Annotated[str, names(TARGETS)] = "predicted"
    threads: NonNegInt = 1
    shard_size: PosInt = 256
    map_dtype: Literal["float32", "float16"] = "float32"
    workers: NonNegInt = 0  # > 1: a local Ray instance of that many workers (salbench.parallel)
    ray: RayCluster | None = None
    methods: dict[str, dict[str, Any] | None] = {}  # entries: checked by validate.method_entry
    vqa_questions: PosInt | None = 128  # VQA tasks: the first questions of the split (None: all)


class EntryKeys(Section):
    """The keys of an attribute.methods entry that are not the method's params (salbench.attribution.spec)."""

    method: Annotated[str, names(METHODS)] | None = None
    layers: Annotated[list[str], MinLen(1)] | None = None
    combine: Annotated[str, names(COMBINATIONS)] = "product"
    weights: list[float] | None = None
    meta_lr: PosFloat | None = None
    explain: Annotated[str, names(TARGETS)] | None = None
    families: Annotated[list[str], names(FAMILIES, "family")] = list(FAMILIES)


# ---- evaluate -----------------------------------------------------------------------------------------------------

class MetricKeys(Section):
    """The keys of an evaluate metric entry that the stage reads; every other key is the metric's param."""

    samples: PosInt | None = None
    methods: list[str] | None = None
    sweep: dict[str, Annotated[list[Any], MinLen(1)]] = {}


class LayerStudy(Section):
    entries: dict[str, list[str]] = {}
    metrics: dict[str, dict[str, Any] | None] = {}


class MetaSaliency(Section):
    lr: PosFloat
    samples: PosInt | None = None
    methods: list[str] | None = None
    metrics: dict[str, dict[str, Any] | None] = {}


class Evaluate(Section):
    seed: int = 0
    device: Device = "cpu"
    batch_size: PosInt = 64
    threads: NonNegInt = 1
    n_boot: PosInt = 1000
    methods: list[str] | None = None
    examples: NonNegInt = 4
    metrics: dict[str, dict[str, Any] | None] = {}
    layer_study: LayerStudy | None = None
    meta_saliency: MetaSaliency | None = None


# ---- plot and the whole file ----------------------------------------------------------------------------------------

class Plot(Section):
    figures: Annotated[list[str], names(FIGURES)] | None = None
    dpi: PosInt = 110


class Params(Section):
    """The whole params.yaml; every section is optional (a stage requires its own, see validate.STAGE_SECTIONS)."""

    render: Render | None = None
    tasks: dict[str, dict[str, Any] | None] | None = None
    folders: dict[str, FolderTask] | None = None
    train: Train | None = None
    concepts: Concepts | None = None
    attribute: Attribute | None = None
    evaluate: Evaluate | None = None
    plot: Plot | None = None

