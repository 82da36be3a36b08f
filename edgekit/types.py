"""Typed values that travel between the steps of the pipeline and into every manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# ImageNet statistics on the 0..255 pixel scale (torchvision's 0..1 values times 255)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Preprocessing:
    """How a picture becomes the model's input: x = (pixel - mean) / std, pixels RGB on 0..255.

    Resize the shorter side to ``round(resolution / crop_fraction)``, then centre-crop ``resolution``.
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"
    channel_order: str = "RGB"  # or "L": greyscale, 8-bit luma as Pillow computes it, mean[0] and std[0] apply

    @property
    def channels(self) -> int:
        """Channels of the model input: 1 for a greyscale ("L") model, whose pictures become luma, else 3."""
        return 1 if self.channel_order == "L" else 3

    @property
    def value_range(self) -> tuple[float, float]:
        low = min((0.0 - m) / s for m, s in zip(self.mean, self.std))
        high = max((255.0 - m) / s for m, s in zip(self.mean, self.std))
        return (round(low, 6), round(high, 6))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["value_range"] = list(self.value_range)
        d["formula"] = "(pixel - mean) / std, pixel RGB in 0..255"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(mean=tuple(d["mean"]), std=tuple(d["std"]), crop_fraction=float(d["crop_fraction"]),
                   interpolation=d.get("interpolation", "bilinear"), channel_order=d.get("channel_order", "RGB"))


IMAGENET_PREPROCESSING = Preprocessing()
TF_SLIM_PREPROCESSING = Preprocessing(mean=(127.5,) * 3, std=(127.5,) * 3, crop_fraction=0.875)
# Google's quantized MobileNets: the uint8 input has scale 1/128 and zero point 128, so x = (pixel - 128) / 128
GOOGLE_QUANT_PREPROCESSING = Preprocessing(mean=(128.0,) * 3, std=(128.0,) * 3, crop_fraction=0.875)


# The presets --preprocessing names, on export and eval alike
PREPROCESSING_PRESETS = {"imagenet": IMAGENET_PREPROCESSING, "tf": GOOGLE_QUANT_PREPROCESSING,
                         "none": Preprocessing(mean=(0.0,) * 3, std=(1.0,) * 3)}
PRESET_NOTES = {"imagenet": "torchvision's ImageNet statistics", "tf": "Google's quantized MobileNets",
                "none": "the model takes the 0..255 pixels as they are"}


def describe_preset(name: str) -> str:
    """``tf: mean 128 std 128 (x = (pixel - 128) / 128; Google's quantized MobileNets)``, for --help."""
    p = PREPROCESSING_PRESETS[name]
    mean = ",".join(f"{m:g}" for m in p.mean) if len(set(p.mean)) > 1 else f"{p.mean[0]:g}"
    std = ",".join(f"{v:g}" for v in p.std) if len(set(p.std)) > 1 else f"{p.std[0]:g}"
    formula = f"x = (pixel - {mean}) / {std}; " if len(set(p.mean)) == 1 else ""
    return f"{name}: mean {mean} std {std} ({formula}{PRESET_NOTES[name]})"


def quantized_input_preprocessing(dtype: str, scale: float | None, zero_point: int | None,
                                  crop_fraction: float = 0.875) -> Preprocessing | None:
    """The float preprocessing an integer-input model implies, taking its input to be camera pixels.

    A uint8 input is the pixel itself and means x = scale * (pixel - zero_point): mean = zero_point,
    std = 1 / scale (128 and 128 for Google's MobileNets). An int8 input is pixel - 128, so
    mean = zero_point + 128. None when the input is not integer or carries no scale.
    """
    dtype = dtype.lower()
    if not scale or dtype not in ("uint8", "int8"):
        return None
    mean = float(zero_point or 0) + (128.0 if dtype == "int8" else 0.0)
    return Preprocessing(mean=(mean,) * 3, std=(1.0 / float(scale),) * 3, crop_fraction=crop_fraction,
                         interpolation="bilinear")


@dataclass(frozen=True)
class WeightsInfo:
    """Where a model's weights came from; ``requested`` is what the user asked for."""

    requested: str
    source: str  # "random", "imagenet", "file", "tflite"
    path: str | None = None
    sha256: str | None = None
    trained: bool = False
    note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model and feed it: recorded in manifests and reports."""

    name: str
    family: str
    width: float
    resolution: int
    num_classes: int
    padding: str = "symmetric"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    weights: WeightsInfo = field(default_factory=lambda: WeightsInfo("random", "random"))
    labels: tuple[str, ...] | None = None
    # the registry's defaults for this model (edgekit.models.registry fills them in): a variant's name leaves them out
    default_width: float | None = None  # None: the width is fixed by the variant (or not known)
    default_resolution: int | None = None

    @property
    def variant(self) -> str:
        """Name with non-default options appended: used for file and folder names."""
        parts = [self.name]
        if self.default_width is not None and self.width != self.default_width:
            parts.append(f"w{self.width:g}")
        if self.default_resolution is not None and self.resolution != self.default_resolution:
            parts.append(f"r{self.resolution}")
        return "_".join(parts)

    def to_dict(self) -> dict:
        d = {"name": self.name, "family": self.family, "width": self.width, "resolution": self.resolution,
             "num_classes": self.num_classes, "padding": self.padding,
             "preprocessing": self.preprocessing.to_dict(), "weights": self.weights.to_dict()}
        return d


@dataclass(frozen=True)
class ModelIO:
    """The inputs and outputs of a model with several of either (a Siamese pair, class scores plus an embedding),
    in forward()'s order: every input the same NCHW picture shape, each output with its own parity task
    (classifier, dense, embedding). The manifest records it (``model.inputs``, ``model.outputs``) and the files'
    metadata carries the names, so that every runtime feeds and reads the tensors in that order. A model of one
    input and one output has none: the single-image path is the zoo's."""

    input_names: tuple[str, ...]
    input_shape: tuple[int, ...]  # N,C,H,W of every input
    output_names: tuple[str, ...]
    output_shapes: tuple[tuple[int, ...], ...]
    output_tasks: tuple[str, ...]

    @property
    def labelled(self) -> int:
        """The output labels.txt names."""
        return labelled_output(self.output_tasks)

    def to_dict(self) -> dict:
        """The manifest's ``model.inputs`` and ``model.outputs`` (the export adds each output's full task)."""
        return {"inputs": [{"name": name, "shape": list(self.input_shape), "layout": "NCHW"}
                           for name in self.input_names],
                "outputs": [{"name": name, "shape": list(shape), "task": {"kind": task}}
                            for name, shape, task in zip(self.output_names, self.output_shapes, self.output_tasks)]}


def labelled_output(tasks) -> int:
    """Which of a model's outputs (their tasks, in order) its labels name: the first classifier output, else the
    first."""
    tasks = list(tasks)
    return tasks.index("classifier") if "classifier" in tasks else 0
