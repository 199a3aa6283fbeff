"""Display planes: how a voxel grid is cut into axial, coronal and sagittal slices for people.

Every 2D slice that medseg shows, prompts or previews uses the **radiological display
convention** of 3D Slicer, ITK-SNAP and OHIF, derived from the affine, never from the voxel order:

==========  ==================  ====================  =====================
plane       slices along        rows run (top->down)  columns run (left->right)
==========  ==================  ====================  =====================
axial       inferior-superior   anterior -> posterior  patient right -> left
coronal     posterior-anterior  superior -> inferior   patient right -> left
sagittal    right-left          superior -> inferior   anterior -> posterior
==========  ==================  ====================  =====================

Coordinates on a displayed slice are ``(x, y) = (column, row)`` in pixels, origin top-left, as
in every image viewer. The slice number is the **voxel index** along the voxel axis closest to the
plane normal (what ITK-SNAP and Slicer show as the voxel coordinate), so ``slice`` never flips.

Oblique volumes are cut along their voxel axes (no resampling): each voxel axis is assigned to the
anatomical axis it is closest to (``nibabel.orientations.io_orientation``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AXES = ("axial", "coronal", "sagittal")

# plane -> (world axis of the slice normal, (world axis, sign) of rows, of columns).
# World axes are RAS: 0 = R, 1 = A, 2 = S; sign -1 means "increasing towards L / P / I".
_PLANES: dict[str, tuple[int, tuple[int, int], tuple[int, int]]] = {
    "axial": (2, (1, -1), (0, -1)),
    "coronal": (1, (2, -1), (0, -1)),
    "sagittal": (0, (2, -1), (1, -1)),
}


@dataclass(frozen=True)
class PlaneView:
    """The mapping between a ``(X, Y, Z)`` voxel grid and a stack of displayed 2D slices.

    Attributes:
        axis: ``"axial" | "coronal" | "sagittal"``.
        grid_shape: ``(X, Y, Z)`` of the volume.
        slice_axis: voxel axis (0, 1, 2) that is cut; ``slice`` = voxel index along it.
        row_axis, row_flip: voxel axis that runs down the rows, and whether it runs backwards.
        col_axis, col_flip: the same for columns.
        spacing: ``(3,)`` voxel size in mm of the volume.
    """

    axis: str
    grid_shape: tuple[int, int, int]
    slice_axis: int
    row_axis: int
    row_flip: bool
    col_axis: int
    col_flip: bool
    spacing: tuple[float, float, float]

    @classmethod
    def from_affine(cls, affine: np.ndarray, grid_shape: tuple[int, ...], axis: str) -> PlaneView:
        """Build the view of ``axis`` for a grid with voxel->RAS ``affine`` ``(4, 4)``."""
        from nibabel.orientations import io_orientation

        if axis not in _PLANES:
            raise ValueError(f"axis must be one of {', '.join(AXES)}, got {axis!r}")
        ornt = io_orientation(np.asarray(affine, dtype=np.float64))  # (3, 2): world axis, sign
        world_to_voxel = {int(w): v for v, (w, _) in enumerate(ornt)}
        sign = {v: int(s) for v, (_, s) in enumerate(ornt)}
        normal, (row_w, row_s), (col_w, col_s) = _PLANES[axis]
        row_v, col_v = world_to_voxel[row_w], world_to_voxel[col_w]
        spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
        return cls(
            axis=axis,
            grid_shape=tuple(int(s) for s in grid_shape[-3:]),  # type: ignore[arg-type]
            slice_axis=world_to_voxel[normal],
            row_axis=row_v,
            row_flip=sign[row_v] != row_s,
            col_axis=col_v,
            col_flip=sign[col_v] != col_s,
            spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        )

    # sizes -------------------------------------------------------------------------------
    @property
    def num_slices(self) -> int:
        return self.grid_shape[self.slice_axis]

    @property
    def height(self) -> int:
        return self.grid_shape[self.row_axis]

    @property
    def width(self) -> int:
        return self.grid_shape[self.col_axis]

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        """``(row_mm, col_mm)``: physical size of one displayed pixel (for aspect ratio)."""
        return self.spacing[self.row_axis], self.spacing[self.col_axis]

    # arrays ------------------------------------------------------------------------------
    def stack(self, array: np.ndarray) -> np.ndarray:
        """``(X, Y, Z)`` (or ``(C, X, Y, Z)``) -> ``(S, H, W)`` (or ``(C, S, H, W)``), a view."""
        lead = array.ndim - 3
        axes = (*range(lead), *(lead + a for a in (self.slice_axis, self.row_axis, self.col_axis)))
        out = np.transpose(array, axes)
        if self.row_flip:
            out = np.flip(out, axis=lead + 1)
        if self.col_flip:
            out = np.flip(out, axis=lead + 2)
        return out

    def unstack(self, stack: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`stack`: ``(S, H, W)`` -> ``(X, Y, Z)`` on the volume's grid."""
        lead = stack.ndim - 3
        out = stack
        if self.row_flip:
            out = np.flip(out, axis=lead + 1)
        if self.col_flip:
            out = np.flip(out, axis=lead + 2)
        order = (self.slice_axis, self.row_axis, self.col_axis)
        inverse = tuple(int(i) for i in np.argsort(order))
        return np.transpose(out, (*range(lead), *(lead + a for a in inverse)))

    def slice_image(self, array: np.ndarray, index: int) -> np.ndarray:
        """The displayed ``(H, W)`` slice ``index`` (voxel index along :attr:`slice_axis`)."""
        return self.stack(array)[..., index, :, :]

    # coordinates -------------------------------------------------------------------------
    def to_voxel(self, slice_index: float, row: float, col: float) -> np.ndarray:
        """Display ``(slice, row, col)`` -> voxel index ``(i, j, k)`` (floats allowed)."""
        ijk = np.zeros(3)
        ijk[self.slice_axis] = slice_index
        ijk[self.row_axis] = (self.height - 1 - row) if self.row_flip else row
        ijk[self.col_axis] = (self.width - 1 - col) if self.col_flip else col
        return ijk

    def to_display(self, ijk: np.ndarray) -> tuple[float, float, float]:
        """Voxel index ``(i, j, k)`` -> display ``(slice, row, col)``."""
        ijk = np.asarray(ijk, dtype=np.float64)
        row = ijk[self.row_axis]
        col = ijk[self.col_axis]
        row = (self.height - 1 - row) if self.row_flip else row
        col = (self.width - 1 - col) if self.col_flip else col
        return float(ijk[self.slice_axis]), float(row), float(col)

    def labels(self) -> dict[str, str]:
        """Orientation letters at the edges of a displayed slice: top, bottom, left, right."""
        _, (row_w, _), (col_w, _) = _PLANES[self.axis]
        pos = "RAS"
        neg = "LPI"
        return {"top": pos[row_w], "bottom": neg[row_w], "left": pos[col_w], "right": neg[col_w]}


def world_to_voxel(affine: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """RAS mm ``(..., 3)`` -> continuous voxel index ``(..., 3)`` through the inverse affine."""
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    xyz = np.asarray(xyz, dtype=np.float64)
    return xyz @ inv[:3, :3].T + inv[:3, 3]


def voxel_to_world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Voxel index ``(..., 3)`` -> RAS mm ``(..., 3)``."""
    aff = np.asarray(affine, dtype=np.float64)
    return np.asarray(ijk, dtype=np.float64) @ aff[:3, :3].T + aff[:3, 3]
