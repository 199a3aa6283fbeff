"""Volume I/O with a geometry contract: files <-> :class:`Volume` (numpy, nibabel, SimpleITK only).

- :func:`load_volume` reads ``.nii``/``.nii.gz`` (nibabel), ``.nrrd``/``.mha``/``.mhd``
  (SimpleITK) and DICOM series folders, or raises :class:`InputError` with a stable ``code``
  (catalogue in :mod:`medseg.io.load`).
- :class:`VolumeHeader`: what a header promises; ``load_volume(on_header=...)`` sees it before
  any voxel is decompressed (memory checks, :mod:`medseg.inference.memory`).
- :func:`check_same_grid` refuses a label (or second image) that is not on the image's grid.
- :func:`save_volume` writes atomically on the volume's grid (both NIfTI forms kept) and never
  over an input; :func:`cleanup_orphan_temps` removes what a killed writer left.
- :class:`StagedWrites` writes several files all-or-nothing (:func:`stage_volume` puts a volume
  into it, ``stage_bytes`` any other file).

- Segmentation formats (issue 14), each library behind one module and imported only there:
  :mod:`medseg.io.dicom_seg` (DICOM SEG, highdicom/pydicom), :mod:`medseg.io.rtstruct`
  (RTSTRUCT, rt-utils), :mod:`medseg.io.seg_nrrd` (3D Slicer ``.seg.nrrd``, slicerio),
  :mod:`medseg.io.label_names` (label names, colours, SNOMED codes, the NIfTI label table),
  :mod:`medseg.io.placement` (a partial label block put on its image grid, never resampled).

Importing this package is light: SimpleITK is imported only when a non-NIfTI file is touched,
and the segmentation-format libraries only when such a file is written or read.
"""

from medseg.errors import InputError, OutputError
from medseg.io.atomic import StagedWrites
from medseg.io.checks import check_same_grid
from medseg.io.load import load_volume
from medseg.io.save import cleanup_orphan_temps, save_volume, stage_volume
from medseg.io.volume import Volume, VolumeHeader

__all__ = [
    "InputError",
    "OutputError",
    "StagedWrites",
    "Volume",
    "VolumeHeader",
    "check_same_grid",
    "cleanup_orphan_temps",
    "load_volume",
    "save_volume",
    "stage_volume",
]
