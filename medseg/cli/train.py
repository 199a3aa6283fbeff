"""``medseg fit|validate|test|predict``: LightningCLI over medseg tasks and data modules.

Usage (see ``configs/README.md``)::

    medseg fit --config configs/experiments/unet_acdc.yaml
    medseg fit --config configs/experiments/unet_acdc.yaml --ckpt_path last   # resume
    medseg fit --config configs/experiments/unet_acdc.yaml --print_config     # resolved config
    medseg test --config configs/experiments/unet_acdc.yaml --ckpt_path last

A run folder is ``trainer.default_root_dir``; it holds ``config.yaml`` (the resolved config of
the latest ``fit``; ``config_<subcommand>.yaml`` for the others), ``metrics.csv`` (CSVLogger),
``tensorboard/`` (when tensorboard is installed), ``checkpoints/`` (``last.ckpt``, the best
``epoch=E-step=S-dice=D.ckpt`` on ``val/dice``; ``...-psnr=P.ckpt`` on ``val/psnr`` for
restoration), ``on_exception.ckpt`` and ``predictions/``.

Exit codes: 0 ok; 2 bad arguments/config (also ``accelerator: gpu`` on a machine without a GPU:
one line naming ``--trainer.accelerator=cpu --trainer.precision=32``) or a case that cannot be
read; 3 a run file could not
be written (disk full, quota: the previous checkpoints stay intact); 4 non-finite loss;
143 SIGTERM (Lightning itself exits 0; RELIABILITY.md §B.6) and 130 Ctrl-C, both after
``on_exception.ckpt`` is written so ``--ckpt_path last`` resumes from the interruption.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import (
    BasePredictionWriter,
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    OnExceptionCheckpoint,
)
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from medseg.engine.callbacks import CheckpointHygiene
from medseg.engine.loggers import RunCSVLogger
from medseg.errors import InputError, MedsegError

__all__ = ["COMMANDS", "MedsegCLI", "SegmentationWriter", "check_accelerator", "main"]

COMMANDS = ("fit", "validate", "test", "predict")
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
EXIT_OUTPUT = 3  # output/IO error (medseg.errors.OutputError)
_STARTED = time.time()
_TRAINERS: list[Trainer] = []  # the trainer of the running CLI, for exit codes after exceptions


def _dims(preprocessing: dict[str, Any]) -> int:
    return int(preprocessing["spatial_dims"])


_NET = "model.init_args.net.init_args"
_LINKS = (  # (data attribute, model target, compute_fn); read after the data module is built
    ("data.preprocessing", "model.init_args.preprocessing", None),
    ("data.preprocessing", f"{_NET}.spatial_dims", _dims),
    ("data.in_channels", f"{_NET}.in_channels", None),
    ("data.num_classes", f"{_NET}.out_channels", None),
    ("data.restoration", "model.init_args.restoration", None),
)
# a link whose source attribute the chosen data module lacks is skipped (jsonargparse), so the
# segmentation links never touch a restoration run and vice versa


class SegmentationWriter(BasePredictionWriter):
    """Write each predicted label map as ``<output_dir>/<case>.nii.gz`` on its input's grid
    (affine and NIfTI forms of the input kept; atomic write, never over an input)."""

    def __init__(self, output_dir: str, overwrite: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.overwrite = overwrite

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, *_):
        from medseg.io import load_volume, save_volume

        self.output_dir.mkdir(parents=True, exist_ok=True)
        for item in prediction:
            grid = load_volume(item["path"], volume_index="all")  # the input's header and forms
            out = grid.with_array(item["pred"])
            save_volume(out, self.output_dir / f"{item['case']}.nii.gz", overwrite=self.overwrite)


class MedsegCLI(LightningCLI):
    """LightningCLI with medseg's run-folder layout, checkpoint hygiene and links."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for source, target, fn in _LINKS:
            parser.link_arguments(source, target, compute_fn=fn, apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then refuse a GPU accelerator on a machine without one before anything is
        seeded or built (the experiment configs name ``accelerator: gpu``; Lightning would end
        in a 30-line traceback)."""
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        cfg = self.config.get(sub, self.config) if sub else self.config
        check_accelerator(cfg.get("trainer") or {})

    def before_fit(self) -> None:
        """Refuse to start a fresh run on top of another run's checkpoints (a SLURM requeue,
        which resumes from Lightning's ``hpc_ckpt_*.ckpt``, is not a fresh run)."""
        if self.config_init["fit"].get("ckpt_path") is not None:
            return
        if any(Path(self.trainer.default_root_dir).glob("hpc_ckpt_*.ckpt")):
            return
        ckpts = sorted(Path(_ckpt_dir(self.trainer)).glob("*.ckpt"))
        if ckpts:
            raise InputError(
                "run_exists",
                f"{len(ckpts)} checkpoint(s) already here; resume with --ckpt_path last, or "
                "start elsewhere with --trainer.default_root_dir",
                path=str(Path(_ckpt_dir(self.trainer))),
            )

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        root = Path(config.get("default_root_dir") or self._default_run_dir())
        config["default_root_dir"] = str(root)
        if config.get("logger") in (None, True):
            config["logger"] = _default_loggers(root)
        ckpt_dir = root / "checkpoints"
        metric = str(getattr(self.model, "checkpoint_metric", "val/dice"))  # best by this
        ours: list[Callback] = [
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename=f"epoch={{epoch}}-step={{step}}-{metric.split('/')[-1]}={{{metric}:.4f}}",
                auto_insert_metric_name=False,
                monitor=metric,
                mode="max",
                save_top_k=1,
                save_last=True,
                enable_version_counter=False,  # a moved/copied run overwrites last.ckpt
            ),
            OnExceptionCheckpoint(dirpath=ckpt_dir),
            CheckpointHygiene(ckpt_dir, tmpdir=root / ".tmp", started=_STARTED),
        ]
        if config["logger"]:
            ours.append(LearningRateMonitor(logging_interval="epoch"))
        if self.subcommand == "predict":
            ours.append(SegmentationWriter(str(root / "predictions"), overwrite=True))
        name = (
            "config.yaml" if self.subcommand in (None, "fit") else f"config_{self.subcommand}.yaml"
        )
        self.save_config_kwargs = {"overwrite": True, "config_filename": name}
        trainer = super()._instantiate_trainer(config, [*callbacks, *ours])
        _TRAINERS.append(trainer)
        return trainer

    def _default_run_dir(self) -> Path:
        """``runs/<last --config file stem>/fold<k>`` (``runs/default`` without a config)."""
        cfg = self.config.get(str(self.subcommand), self.config)
        files = cfg.get("config") or []
        name = Path(str(files[-1])).stem if files else "default"
        fold = getattr(self.datamodule, "fold", None)
        return Path("runs") / name / (f"fold{fold}" if fold is not None else "")


def check_accelerator(trainer: Any) -> None:
    """:class:`InputError` (exit 2, one line) when ``trainer.accelerator`` asks for a GPU that
    this machine does not have (``gpu``: CUDA or Apple MPS; ``cuda``; ``mps``), naming the
    overrides that train on the CPU instead."""
    from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator

    wanted = trainer.get("accelerator")
    if not isinstance(wanted, str):
        return
    name = wanted.lower()
    found = {
        "gpu": lambda: CUDAAccelerator.is_available() or MPSAccelerator.is_available(),
        "cuda": CUDAAccelerator.is_available,
        "mps": MPSAccelerator.is_available,
    }.get(name)
    if found is None or found():
        return
    fix = "--trainer.accelerator=cpu --trainer.precision=32"
    if str(trainer.get("devices", 1)) not in ("1", "auto", "None"):
        fix += " --trainer.devices=1"
    if "ddp" in str(trainer.get("strategy") or ""):
        fix += " --trainer.strategy=auto"
    raise InputError(
        "no_gpu",
        f"no GPU found (the config asks for trainer.accelerator: {wanted}); to train on the "
        f"CPU instead add {fix}",
    )


def main(args: Sequence[str] | None = None) -> int:
    """Run ``medseg fit|validate|test|predict ARGS`` and return the exit code.

    ``--debug`` (anywhere) prints tracebacks; every other argument goes to LightningCLI.
    """
    argv = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    global _STARTED
    _STARTED = time.time()  # temp files older than this run are orphans of killed saves
    _TRAINERS.clear()
    warnings.filterwarnings("ignore", message=r".*ckpt_path=\"last\"\) is set, but there is no")
    warnings.filterwarnings("ignore", message=r".*was called without a model.*last model")
    warnings.filterwarnings("ignore", message=r".*not recommended to provide both args and comm")
    # DDP's launcher starts every other rank as [python, sys.argv[0] (or -m module),
    # *sys.argv[1:]]: the whole medseg command must be in sys.argv while the CLI runs
    argv0, sys.argv = sys.argv, [sys.argv[0], *argv]
    tmp0 = (os.environ.get("TMPDIR"), tempfile.tempdir)  # CheckpointHygiene points them at the run
    try:
        cli = MedsegCLI(
            model_class=LightningModule,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"parser_mode": "yaml"},
            args=argv,
        )
    except SIGTERMException:
        print("error: terminated (SIGTERM); resume with --ckpt_path last", file=sys.stderr)
        return EXIT_SIGTERM
    except SystemExit as exc:
        status = _interrupted_status()
        if status is not None:
            return status
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 2
        return int(exc.code or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except MedsegError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # disk full, quota, file size limit, unwritable run folder
        if debug:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        print(
            f"error: {where}could not write ({exc.strerror or exc}); free space or set "
            "--trainer.default_root_dir elsewhere, then resume with --ckpt_path last (the "
            "previous checkpoints are intact)",
            file=sys.stderr,
        )
        return EXIT_OUTPUT
    finally:
        sys.argv = argv0
        _restore_tmpdir(*tmp0)
    status = _interrupted_status(cli.trainer)
    return 0 if status is None else status


def _restore_tmpdir(env: str | None, tempdir: str | None) -> None:
    """Undo CheckpointHygiene's ``$TMPDIR`` also when the run ended by an exception."""
    if env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = env
    tempfile.tempdir = tempdir


def _interrupted_status(trainer: Trainer | None = None) -> int | None:
    trainer = trainer or (_TRAINERS[-1] if _TRAINERS else None)
    if trainer is None:
        return None
    if trainer.received_sigterm:
        print("error: terminated (SIGTERM); resume with --ckpt_path last", file=sys.stderr)
        return EXIT_SIGTERM
    if trainer.interrupted:
        print("error: interrupted; resume with --ckpt_path last", file=sys.stderr)
        return EXIT_SIGINT
    return None


def _default_loggers(root: Path) -> list[Logger]:
    """CSV first (so ``trainer.log_dir`` = the run folder), TensorBoard when installed."""
    loggers: list[Logger] = [RunCSVLogger(save_dir=str(root), name="", version="")]
    try:
        from lightning.fabric.loggers.tensorboard import (
            _TENSORBOARD_AVAILABLE,
            _TENSORBOARDX_AVAILABLE,
        )
        from lightning.pytorch.loggers import TensorBoardLogger

        if _TENSORBOARD_AVAILABLE or _TENSORBOARDX_AVAILABLE:
            loggers.append(TensorBoardLogger(save_dir=str(root), name="tensorboard", version=""))
    except ImportError:  # pragma: no cover - lightning without tensorboard support
        pass
    return loggers


def _ckpt_dir(trainer: Trainer) -> str:
    cb = trainer.checkpoint_callback
    return str(cb.dirpath) if cb is not None and cb.dirpath else trainer.default_root_dir


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
