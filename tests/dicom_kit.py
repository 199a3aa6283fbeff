"""DICOM series built in the tests with pydicom: complete CT slice headers (patient, study,
series, frame of reference, SOP UIDs, rescale), any orientation, optional gantry tilt."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LPS = np.diag([-1.0, -1.0, 1.0])
STUDY_UID = "1.2.826.0.1.3680043.8.498.101"
SERIES_UID = "1.2.826.0.1.3680043.8.498.102"
FOR_UID = "1.2.826.0.1.3680043.8.498.103"

AXIAL = np.diag([-0.8, -0.8, 2.5, 1.0])  # LPS axial: i -> left... as a RAS affine
SAGITTAL = np.array(
    [[0.0, 0.0, -2.0, 10.0], [0.9, 0.0, 0.0, -20.0], [0.0, -0.9, 0.0, 30.0], [0, 0, 0, 1.0]]
)


def oblique(degrees: float = 30.0) -> np.ndarray:
    """A RAS affine rotated about the left-right axis (0.8 mm pixels, 2 mm slices)."""
    t = np.deg2rad(degrees)
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    affine = np.eye(4)
    affine[:3, :3] = LPS @ rot @ np.diag([0.8, 0.8, 2.0])
    affine[:3, 3] = [5.0, -7.0, 11.0]
    return affine


def write_ct_series(
    folder: Path,
    array: np.ndarray,
    affine: np.ndarray,
    *,
    patient_name: str = "Doe^Jane",
    tilt_mm: float = 0.0,
    series_uid: str = SERIES_UID,
    omit: tuple[str, ...] = (),
) -> Path:
    """Write ``array`` (X, Y, Z) HU on the RAS ``affine`` as one CT file per slice.

    ``tilt_mm``: each slice shifted that far along the column direction per slice (gantry
    tilt). Non-ASCII patient names are written as UTF-8 (ISO_IR 192). ``omit``: attributes
    left out (as anonymisers drop them).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    lin = LPS @ affine[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    row, col = lin[:, 0] / spacing[0], lin[:, 1] / spacing[1]
    for k in range(array.shape[2]):
        pos = LPS @ (affine @ [0, 0, k, 1.0])[:3] + col * tilt_mm * k
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = f"{series_uid}.{k + 1}"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = generate_uid()
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName = patient_name
        ds.PatientID = "P001"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "F"
        ds.StudyInstanceUID = STUDY_UID
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = FOR_UID
        ds.StudyDate = ds.SeriesDate = "20240101"
        ds.StudyTime = ds.SeriesTime = "120000"
        ds.StudyID = "1"
        ds.AccessionNumber = "A1"
        ds.ReferringPhysicianName = ""
        ds.Modality = "CT"
        ds.Manufacturer = "tests"
        ds.SeriesNumber = 2
        ds.InstanceNumber = k + 1
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in [*row, *col]]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]  # row, column spacing
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.Rows, ds.Columns = array.shape[1], array.shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
        ds.KVP = "120"
        ds.PixelData = np.ascontiguousarray(array[:, :, k].T.astype("<i2")).tobytes()
        for key in omit:
            delattr(ds, key)
        ds.save_as(folder / f"ct{k:04d}.dcm", enforce_file_format=True)
    return folder


def blobs(shape: tuple[int, int, int], labels: int = 3, seed: int = 0) -> np.ndarray:
    """A label map (X, Y, Z) uint8 with ``labels`` separate boxes/ellipsoids, labels 1..N."""
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, dtype=np.uint8)
    grid = np.indices(shape).astype(np.float32)
    for value in range(1, labels + 1):
        centre = [rng.uniform(0.25, 0.75) * s for s in shape]
        radius = [max(1.5, rng.uniform(0.12, 0.25) * s) for s in shape]
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radius, strict=True))
        out[inside <= 1] = value
    return out
