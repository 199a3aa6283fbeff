"""Where LiteMedSAM's image encoder runs on the CPU: torch eager (the reference) or OpenVINO.

``runtime`` is one of :data:`RUNTIMES`:

- ``"torch"``: the eager encoder of :class:`medseg.inference.litemedsam.LiteMedSAMPredictor`
  (bf16 BatchNorm-folded copy on CPUs with native bf16, fp32 otherwise): the reference and the
  fallback.
- ``"openvino"``: the BatchNorm-folded fp32 encoder converted once by ``openvino.convert_model``
  and compiled for this CPU (bf16 inference precision where the CPU has AMX/AVX512-BF16, as
  ``precision`` says; fp32 otherwise). The converted model is kept on disk
  (:func:`cache_folder`) under a key of the weights' SHA-256, the OpenVINO version, the
  precision, the CPU's model name and flags and this machine's id, so a change of any of them
  rebuilds it and a folder copied from another machine is never used; OpenVINO's own compiled
  kernels are cached beside it. First run: a few seconds of conversion and compilation.
- ``"auto"``: ``torch``. Measured (README "Benchmarks"): OpenVINO's fp32 encoder is 1.9x
  faster than torch's fp32 one with the same masks, its bf16 encoder 1.22x faster per slice than
  torch's bf16 but with masks that drift to Dice 0.969 against the fp32 reference over a
  100-slice propagation (torch's bf16: 0.998). ``auto`` still stays on torch because a process
  that has run an OpenVINO model and then forks (PyTorch ``DataLoader`` workers, for one) was
  killed by a segmentation fault in our tests: ask for ``openvino`` by name (the CLI, a viewer
  process or a script that does not fork afterwards) on CPUs without native bf16 or with
  ``precision="fp32"``. A runtime that refuses the graph fails with a ModelError naming
  ``--runtime torch``.

Every runtime maps ``(N, 3, 256, 256)`` float32 images (LiteMedSAM's preprocessed input) to
``(N, 256, 64, 64)`` float32 embeddings; the mask decoder stays in torch fp32.
"""

from __future__ import annotations

import hashlib
import os
import platform
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from medseg.errors import ModelError

__all__ = ["RUNTIMES", "OpenVinoEncoder", "cache_folder", "encoder_runtime", "resolve_runtime"]

RUNTIMES = ("auto", "torch", "openvino")
Encoder = Callable[[Tensor], Tensor]


def resolve_runtime(runtime: str, device: torch.device) -> str:
    """``"auto"`` -> ``"torch"`` (module docstring: OpenVINO is opt-in); a named runtime passes
    through (``openvino`` on CUDA is refused: it runs on the CPU)."""
    if runtime not in RUNTIMES:
        raise ModelError(
            "bad_runtime", f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}"
        )
    if runtime == "auto":
        return "torch"
    if runtime == "openvino" and device.type != "cpu":
        raise ModelError("bad_runtime", "--runtime openvino runs on the CPU: use --device cpu")
    if runtime == "openvino" and not _has_openvino():
        raise ModelError(
            "missing_dependency",
            "--runtime openvino needs: pip install openvino (or use --runtime torch)",
        )
    return runtime


def encoder_runtime(net: nn.Module, runtime: str, precision: str) -> Encoder | None:
    """The OpenVINO encoder for ``net`` (a LiteMedSAM) when ``runtime`` is ``"openvino"``, else
    None (the torch path); a converter or compiler refusal is a ModelError naming the fix."""
    if runtime != "openvino":
        return None
    try:
        return OpenVinoEncoder(net, precision)
    except Exception as err:  # a converter or compiler refusal, whatever its type
        raise ModelError(
            "runtime_failed",
            f"OpenVINO could not compile the encoder ({type(err).__name__}: {err}); "
            "use --runtime torch",
        ) from err


class OpenVinoEncoder:
    """LiteMedSAM's encoder compiled by OpenVINO for this CPU (module docstring).

    Args:
        net: a LiteMedSAM in eval mode (its ``inference_encoder`` is converted).
        precision: ``"bf16"`` or ``"fp32"`` inference precision.
        threads: CPU threads (None: torch's count, so ``torch.set_num_threads`` governs both).
    """

    def __init__(self, net: nn.Module, precision: str, *, threads: int | None = None) -> None:
        import openvino as ov

        encoder = net.inference_encoder(torch.float32).to(memory_format=torch.contiguous_format)
        key = _key(encoder, ov.__version__, precision)
        folder = cache_folder() / key
        xml = folder / "encoder.xml"
        core = ov.Core()
        core.set_property({"CACHE_DIR": str(folder / "compiled")})
        if xml.is_file() and (folder / "encoder.bin").is_file():
            model = core.read_model(xml)
            self.built = False
        else:
            example = torch.zeros(1, 3, 256, 256)
            with warnings.catch_warnings():  # the tracer's notes on TinyViT's shape asserts
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                model = ov.convert_model(encoder, example_input=example)  # batch 1: TinyViT's
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)  # reshapes fix the batch
            tmp = folder / f"encoder.{os.getpid()}.xml"
            ov.save_model(model, tmp, compress_to_fp16=False)
            tmp.with_suffix(".bin").replace(folder / "encoder.bin")  # the .bin first, then the
            tmp.replace(xml)  # .xml that names it: a half-written pair is never read
            self.built = True
        config = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
        }
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.precision, self.folder = precision, folder

    def __call__(self, images: Tensor) -> Tensor:
        """``(N, 3, 256, 256)`` float32 -> ``(N, 256, 64, 64)`` float32, one image per call
        (the converted graph has batch 1)."""
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        outputs = []
        for one in array:
            out = self.request.infer([one[None]])
            outputs.append(torch.from_numpy(out[self.compiled.outputs[0]].copy()))
        return torch.cat(outputs)


def cache_folder() -> Path:
    """``$MEDSEG_CACHE`` or ``$XDG_CACHE_HOME/medseg`` (default ``~/.cache/medseg``), then
    ``openvino``."""
    base = os.environ.get("MEDSEG_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "medseg")
    return Path(base) / "openvino"


def _key(encoder: nn.Module, version: str, precision: str) -> str:
    """SHA-256 over the weights, the OpenVINO version, the precision, the CPU and machine."""
    digest = hashlib.sha256()
    for name, tensor in encoder.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    digest.update(f"{version}|{precision}|{_cpu_identity()}|{_machine_id()}".encode())
    return digest.hexdigest()[:32]


def _cpu_identity() -> str:
    """The CPU's model name and flags (Linux), else what :mod:`platform` knows."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("model name", "flags") and name.strip() not in fields:
            fields[name.strip()] = value.strip()
    return f"{fields.get('model name', '')}|{fields.get('flags', '')}"


def _machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            return Path(path).read_text().strip()
        except OSError:
            continue
    return platform.node()


def _has_openvino() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None
