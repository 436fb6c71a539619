"""Configuration of the action-conditioned video world model (strict pydantic, one YAML file).

    cfg = load_video_config("configs/worldmodels/video_tiny.yaml", overrides={"train.steps": 100})

Fields marked *resolved* are filled from the training dataset (cameras, sizes, dims, the scene)
and saved with the checkpoint, so a checkpoint directory is self-describing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from common.config import Strict, format_validation_error, load_model
from common.errors import UsageError

VIDEO_CONFIG_VERSION: Final = 2


class VAEConfig(Strict):
    """diffusers `AutoencoderKL`: a tiny one trained on the dataset's frames, or a pretrained local one."""

    pretrained: str | None = Field(
        None, description="local diffusers AutoencoderKL directory; skips VAE training"
    )
    block_out_channels: tuple[int, ...] = Field((32, 64, 64), description="downsampling = 2**(len - 1)")
    layers_per_block: int = Field(1, ge=1)
    latent_channels: int = Field(4, ge=1)
    norm_num_groups: int = Field(16, ge=1)
    train_steps: int = Field(1500, ge=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    kl_weight: float = Field(1e-6, ge=0)
    detail_weight: float = Field(
        0.0,
        ge=0,
        description=(
            "reconstruction weight of fine detail: a pixel's loss is weighted 1 + detail_weight * |x - local mean of x| "
            "(summed over channels, window detail_kernel), so that small objects a few pixels wide (a cube the "
            "policies must find) are not averaged away with the background"
        ),
    )
    detail_kernel: int = Field(7, ge=3, description="odd window size of the local mean")


class DiTConfig(Strict):
    """A small video transformer over latent patches: frame-causal attention, adaLN-Zero timestep
    conditioning, per-frame action cross-attention. The CPU default.

    `state_stream`: `shared` sends image and state tokens through the same weights, attending to each
    other. `separate` (MM-DiT style) gives the state tokens their own weights; they attend to state
    tokens only while image tokens attend to both, so the poses are predicted from poses and actions and
    the frames are drawn to match them; that stream can then also be trained alone on cheap state-only
    batches (`train.state_batch_size`)."""

    type: Literal["video_dit"] = "video_dit"
    dim: int = Field(128, ge=8)
    depth: int = Field(6, ge=1)
    heads: int = Field(4, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    patch: int = Field(2, ge=1, description="image latent patch size")
    state_patch: int = Field(2, ge=1, description="state-frame patch size")
    state_stream: Literal["shared", "separate"] = Field("shared", description="see the class docstring")


class SVDConfig(Strict):
    """diffusers `UNetSpatioTemporalConditionModel` (Stable Video Diffusion), pretrained from a local
    directory or built from `unet` kwargs, with zero-initialised per-frame action adapters."""

    type: Literal["svd_unet"] = "svd_unet"
    pretrained: str | None = Field(
        None, description="local diffusers directory of the UNet (e.g. SVD's unet/)"
    )
    unet: dict[str, Any] = Field(default_factory=dict, description="constructor kwargs when not pretrained")
    adapter_heads: int = Field(1, ge=1)


class CosmosConfig(Strict):
    """diffusers `CosmosTransformer3DModel` (Cosmos-Predict2's video DiT, a Video2World model: its input
    holds the condition-mask channel), pretrained from a local directory or built from `transformer`
    kwargs, with zero-initialised per-frame action adapters (`worldmodels.cosmos`)."""

    type: Literal["cosmos_predict2"] = "cosmos_predict2"
    pretrained: str | None = Field(
        None, description="local diffusers directory of a Predict2 Video2World model (or its transformer/)"
    )
    transformer: dict[str, Any] = Field(
        default_factory=dict, description="constructor kwargs when not pretrained"
    )
    adapter_heads: int = Field(1, ge=1)
    fps: float = Field(
        16.0,
        gt=0,
        description=(
            "frame rate told to the transformer's rotary embedding (latent frame i sits at time position "
            "24 i / fps): 16, what Predict2 Video2World was trained with, spaces our steps as its latent frames"
        ),
    )

    @model_validator(mode="after")
    def _source(self) -> CosmosConfig:
        if not self.pretrained and not self.transformer:
            raise ValueError("cosmos_predict2 needs pretrained (a local directory) or transformer kwargs")
        return self

    @property
    def patch_size(self) -> tuple[int, int, int]:
        """(t, h, w) patch of the transformer: from `transformer`, else (1, 2, 2) as every Predict2 model."""
        t, h, w = self.transformer.get("patch_size", (1, 2, 2))
        return int(t), int(h), int(w)


class MemoryConfig(Strict):
    """Context = the `recent` latest frames + `retrieved` older frames of nearest pose."""

    recent: int = Field(2, ge=1)
    retrieved: int = Field(2, ge=0)
    pose_dims: list[int] = Field([0, 1, 2, 3], description="proprio entries compared for retrieval")


class StateFrameConfig(Strict):
    """Shape of the Cosmos-style latent frame carrying proprio, object poses and the value."""

    channels: int = Field(4, ge=1)
    height: int = Field(4, ge=1)
    width: int = Field(4, ge=1)
    loss_weight: float = Field(1.0, ge=0)
    residual: bool = Field(
        False,
        description=(
            "future state frames carry the change from the last context step (normalised by the dataset's range "
            "of such changes) instead of the absolute vector: a still object is a zero frame, and the sampler's "
            "error scales with how far things move rather than with the workspace"
        ),
    )


class SamplerConfig(Strict):
    """Flow-matching Euler sampler (diffusers `FlowMatchEulerDiscreteScheduler`)."""

    steps: int = Field(8, ge=1)
    spacing: Literal["diffusers", "uniform"] = Field(
        "diffusers",
        description=(
            "where the steps fall: diffusers' default puts `steps` noise levels evenly from 1 to 0.001, so the "
            "last network pass only moves from 0.001 to 0 (4 steps denoise like 3); uniform takes `steps` equal "
            "steps from 1 to 0, each one a real denoising step"
        ),
    )
    shift: float = Field(1.0, gt=0)
    precision: Literal["float32", "bfloat16"] = Field(
        "float32",
        description=(
            "number format of the network passes while imagining (the denoiser and the VAE decoder run under "
            "autocast; the sampler's state stays float32): bfloat16 is several times faster on CPUs with "
            "AVX-512 BF16 or AMX and on GPUs, several times slower on CPUs without them (emulated; the world "
            "warns), and its frames are not bit-identical to float32's"
        ),
    )
    guidance: float = Field(1.0, ge=0, description="classifier-free guidance scale on the actions (1 = off)")
    samples: int = Field(2, ge=1, description="samples per step; their disagreement is the uncertainty")
    frames: Literal["first", "mean"] = Field(
        "first",
        description=(
            "which frame continues an imagined episode: the first sample's, or the mean of the samples' latents "
            "(a lower-variance estimate; blurrier where the samples disagree)"
        ),
    )
    temperature: float = Field(
        1.0,
        ge=0,
        le=1,
        description=(
            "scale of the first sample's initial noise (the sample that continues an episode with frames: first): "
            "0 starts the flow ODE at the centre of the noise distribution, which gives the sharpest single "
            "estimate of the next frame; the other samples keep temperature 1, so their disagreement is still "
            "the uncertainty"
        ),
    )
    context_noise: float = Field(
        0.0,
        ge=0,
        lt=1,
        description=(
            "noise level given to the context latents when generating (the model's own earlier frames are "
            "imperfect; a model trained with train.context_noise > 0 expects some)"
        ),
    )

    def updated(self, **changes: float | str | None) -> SamplerConfig:
        """This sampler with `changes` applied and validated; a None value keeps that field as it is.
        Raises `UsageError` (one line) for a value out of range."""
        data = {**self.model_dump(), **{k: v for k, v in changes.items() if v is not None}}
        try:
            return SamplerConfig.model_validate(data)
        except ValidationError as e:
            raise UsageError(format_validation_error(e, SamplerConfig, "sampler")) from None


class TrainConfig(Strict):
    steps: int = Field(3000, ge=0)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(5e-4, gt=0)
    warmup: int = Field(100, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    cond_drop: float = Field(0.05, ge=0, le=1, description="probability of dropping the actions (for CFG)")
    context_noise: float = Field(
        0.0,
        ge=0,
        lt=1,
        description=(
            "context-noise augmentation: each window's context latents are noised to a level drawn uniformly "
            "from [0, context_noise] and the level is given to the denoiser, so that autoregressive rollouts "
            "do not drift on their own imperfect frames"
        ),
    )
    motion_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description=(
            "share of each dynamics batch drawn from windows in which an object moves (contact windows); the rest is "
            "drawn from all windows. Raising it above the dataset's own share (41% in push_cube_small) counters a "
            "model's pull towards 'the object stays put', under which imagined pushes fall short"
        ),
    )
    motion_threshold: float = Field(
        0.005,
        gt=0,
        description=(
            "an object moves in a window when its position changes by more than this (metres) over the future steps"
        ),
    )
    state_batch_size: int = Field(
        0,
        ge=0,
        description=(
            "extra windows per step that train the state stream alone (no image tokens: ~1/15 of a full window's "
            "cost); needs backbone.state_stream: separate. The state loss is the mean over both batches"
        ),
    )
    holdout_episodes: int = Field(30, ge=0, description="the last N episodes are held out for validation")
    val_every: int = Field(250, ge=1)
    checkpoint_every: int = Field(250, ge=1)
    seed: int = 0
    init: str | None = Field(
        None,
        description=(
            "warm start: a checkpoint of ours whose weights, VAE and dataset statistics start the run (the VAE "
            "stage is skipped); condition inputs the checkpoint lacks (e.g. `physics`) start at zero, so the "
            "run begins from exactly the checkpoint's predictions"
        ),
    )
    init_vae_steps: int = Field(
        0,
        ge=0,
        description="with `init`: first fine-tune the checkpoint's VAE this many steps on the new data (e.g. "
        "frames of a camera view it has never seen; its latent statistics are kept); 0 keeps it as it is",
    )
    strategy: str = Field("auto", description="Lightning strategy on multi-device machines (e.g. ddp)")
    devices: int | str = "auto"
    accelerator: str = "auto"


Backbone = Annotated[DiTConfig | SVDConfig | CosmosConfig, Field(discriminator="type")]


@dataclass(frozen=True)
class RemovedOption:
    """A top-level option of an older config version that is no longer supported: a config of that
    version loads when the option holds its off value, and is refused (saying why) when it is on."""

    key: str
    is_off: Callable[[object], bool]
    why: str


def _integration_off(value: object) -> bool:
    return isinstance(value, dict) and set(value) <= {"dims", "max_norm"} and not value.get("dims")


REMOVED_IN_VERSION_2 = (
    RemovedOption(
        "residual_latents",
        lambda value: value is False,
        "generated as changes from the last frame, image latents piled up into ghost arms over a rollout",
    ),
    RemovedOption(
        "action_integration",
        _integration_off,
        "with the commanded displacement as a condition, policies moved the imagined cube by command, not contact",
    ),
)


def _upgrade_from_version_1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 config as version 2: the removed options are dropped where they are off; an option
    that is on raises a `ValidationError` at its key."""
    data = dict(data)
    for option in REMOVED_IN_VERSION_2:
        if option.key in data and not option.is_off(value := data.pop(option.key)):
            error = PydanticCustomError(
                "removed_option",
                "removed in world-model config version {version}, and on here: {why}",
                {"version": VIDEO_CONFIG_VERSION, "why": option.why},
            )
            details = InitErrorDetails(type=error, loc=(option.key,), input=value)
            raise ValidationError.from_exception_data(VideoWorldModelConfig.__name__, [details])
    return {**data, "version": VIDEO_CONFIG_VERSION}


PHYSICS_SUFFIXES = ("friction_scale", "mass_scale")  # the randomisation's physics parameters


class VideoWorldModelConfig(Strict):
    version: Literal[2] = Field(
        VIDEO_CONFIG_VERSION,
        description="format version; a version-1 config (checkpoint or YAML) is upgraded on load",
    )
    future: int = Field(4, ge=1, description="frames generated per forward pass")
    value_discount: float = Field(0.9, gt=0, le=1, description="value target = discount ** steps-to-success")
    vae: VAEConfig = VAEConfig()
    backbone: Backbone = DiTConfig()
    memory: MemoryConfig = MemoryConfig()
    state_frame: StateFrameConfig = StateFrameConfig()
    sampler: SamplerConfig = SamplerConfig()
    train: TrainConfig = TrainConfig()
    physics: list[str] = Field(
        default_factory=list,
        description=(
            "physics scale factors the model is conditioned on (the dataset's randomisation parameters, e.g. "
            "cube.mass_scale, cube.friction_scale, table.friction_scale): the physics a user knows. Every "
            "frame's condition carries their logarithms (0 = the scene's nominal physics); an imagined "
            "episode is then started with them (`Context.physics`)"
        ),
    )
    # resolved from the dataset
    cameras: list[str] = Field(default_factory=list)
    image_size: tuple[int, int] = (64, 64)
    action_dim: int = 4
    state_dim: int = 11
    env_dim: int = 7
    max_steps: int = Field(64, ge=1, description="longest episode, in control steps")
    fps: float = 10.0
    scene: dict[str, Any] | None = Field(None, description="the SceneSpec the dataset was made in")
    vae_arch: dict[str, Any] | None = Field(None, description="the VAE's diffusers config (set at training)")

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        """Configs written before version 2 (an explicit `version: 1`, or no version and a removed key)."""
        if not isinstance(data, dict):
            return data
        old = data.get("version") == 1 or (
            "version" not in data and any(o.key in data for o in REMOVED_IN_VERSION_2)
        )
        return _upgrade_from_version_1(data) if old else data

    @model_validator(mode="after")
    def _check(self) -> VideoWorldModelConfig:
        bad = [n for n in self.physics if not n.endswith(PHYSICS_SUFFIXES)]
        if bad:
            raise ValueError(f"physics takes scale factors ending in {PHYSICS_SUFFIXES}, got {bad}")
        h, w = self.image_size
        if h % self.downsample or w % self.downsample:
            raise ValueError(
                f"image_size {h}x{w} is not divisible by the VAE's downsampling {self.downsample}"
            )
        if isinstance(self.backbone, DiTConfig):
            self._check_dit(self.backbone)
        elif self.train.state_batch_size:
            raise ValueError(
                "train.state_batch_size needs the video_dit backbone with state_stream: separate "
                "(svd_unet and cosmos_predict2 have no state stream of their own)"
            )
        elif isinstance(self.backbone, SVDConfig) and (
            self.train.context_noise or self.sampler.context_noise
        ):
            # the SVD UNet takes one noise level per clip, so it cannot be told how noisy the context is
            raise ValueError(
                "train.context_noise / sampler.context_noise need the video_dit backbone or cosmos_predict2 "
                "(the SVD UNet has one noise level per clip)"
            )
        if isinstance(self.backbone, CosmosConfig):
            self._check_cosmos(self.backbone)
        return self

    def _check_cosmos(self, b: CosmosConfig) -> None:
        pt, ph, pw = b.patch_size
        lh, lw = self.latent_size
        if pt != 1:  # a step is one latent frame with its own timestep
            raise ValueError(f"backbone.transformer.patch_size must patch 1 frame, got {pt}")
        if lh % ph or lw % pw:
            raise ValueError(f"latent {lh}x{lw} is not divisible by the Cosmos transformer's patch {ph}x{pw}")

    def _check_dit(self, b: DiTConfig) -> None:
        lh, lw = self.latent_size
        if lh % b.patch or lw % b.patch:
            raise ValueError(f"latent {lh}x{lw} is not divisible by backbone.patch {b.patch}")
        sf = self.state_frame
        if sf.height % b.state_patch or sf.width % b.state_patch:
            raise ValueError(
                f"state_frame {sf.height}x{sf.width} is not divisible by backbone.state_patch {b.state_patch}"
            )
        if self.train.state_batch_size and b.state_stream != "separate":
            raise ValueError(
                "train.state_batch_size needs backbone.state_stream: separate (a shared stream's state "
                "tokens attend to image tokens, so they cannot be trained without them)"
            )
        if b.dim % b.heads:
            raise ValueError(f"backbone.dim {b.dim} is not divisible by backbone.heads {b.heads}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.vae.block_out_channels) - 1)

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.image_size[0] // self.downsample, self.image_size[1] // self.downsample

    @property
    def value_index(self) -> int:
        """Index of the value in the state-frame vector [proprio, object poses, value]."""
        return self.state_dim + self.env_dim

    @property
    def vector_dim(self) -> int:
        return self.state_dim + self.env_dim + 1


def load_video_config(path: str | Path, overrides: dict[str, Any] | None = None) -> VideoWorldModelConfig:
    return load_model(VideoWorldModelConfig, path, overrides)
