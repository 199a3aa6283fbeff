"""Region partitioners for RAT: painting convention, k-means, the cache, LiteMedSAM box grid."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.inference.regions import (
    KMeansPartitioner,
    RegionCache,
    RegionPartitioner,
    SamGridPartitioner,
    make_partitioner,
    paint_masks,
)

YY, XX = np.mgrid[:128, :128]


def _disc(centre: tuple[int, int], radius: int) -> np.ndarray:
    return (YY - centre[0]) ** 2 + (XX - centre[1]) ** 2 < radius**2


def _two_discs() -> np.ndarray:
    return 0.1 + 0.8 * _disc((44, 44), 20) + 0.8 * _disc((88, 88), 15)


def _check_convention(ids: np.ndarray, shape: tuple[int, int]) -> None:
    assert ids.shape == shape and ids.dtype == np.int32
    assert ids.min() == 1
    assert set(np.unique(ids).tolist()) == set(range(1, int(ids.max()) + 1))


class _Counting:
    """A fake partitioner: two halves, counts its calls."""

    name, faithful = "fake", False

    def __init__(self) -> None:
        self.calls = 0
        self.config = {"version": 1}

    def partition(self, image: np.ndarray) -> np.ndarray:
        return self(image)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.calls += 1
        ids = np.ones(image.shape, np.int32)
        ids[:, image.shape[1] // 2 :] = 2
        return ids


# ---------------------------------------------------------------- painting


def test_paint_masks_area_order_and_unlabelled():
    big = np.zeros((8, 8), bool)
    big[:6, :6] = True
    small = np.zeros((8, 8), bool)
    small[1:3, 1:3] = True
    hidden = np.zeros((8, 8), bool)
    hidden[1:2, 1:2] = True  # inside `small`, painted after it: still visible (smallest)
    ids = paint_masks([small, big, hidden], (8, 8))
    _check_convention(ids, (8, 8))
    assert ids[5, 5] == 1  # the largest mask gets id 1
    assert ids[2, 2] == 2 and ids[1, 1] == 3  # smaller masks overwrite
    assert ids[7, 7] == 4  # unlabelled = K + 1
    covered = paint_masks([big, ~big], (8, 8))
    assert set(np.unique(covered).tolist()) == {1, 2}  # no K + 1 when everything is covered


def test_paint_masks_relabels_fully_hidden_masks():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = a.copy()  # same area, painted later: hides `a` completely
    ids = paint_masks([a, b], (4, 4))
    _check_convention(ids, (4, 4))
    assert set(np.unique(ids).tolist()) == {1, 2}
    assert paint_masks([], (3, 3)).tolist() == [[1] * 3] * 3


# ---------------------------------------------------------------- k-means


def test_kmeans_convention_and_determinism():
    image = _two_discs() + np.random.default_rng(0).normal(0, 0.02, (128, 128))
    part = KMeansPartitioner(n_regions=6, seed=0)
    assert isinstance(part, RegionPartitioner) and part.faithful is False
    ids = part(image)
    _check_convention(ids, (128, 128))
    assert np.array_equal(ids, KMeansPartitioner(n_regions=6, seed=0).partition(image))
    # every region is painted by area: id 1 is the largest painted component
    areas = np.bincount(ids.ravel())[1:]
    painted = areas[:-1] if (ids == ids.max()).sum() < areas.max() else areas
    assert painted[0] == painted.max()
    # the discs do not share a region with the background corner
    assert ids[44, 44] != ids[2, 2] and ids[88, 88] != ids[2, 2]


def test_kmeans_any_intensity_range_and_constant_image():
    image = 1000.0 * _two_discs() - 300.0
    a, b = KMeansPartitioner(n_regions=4)(image), KMeansPartitioner(n_regions=4)(_two_discs())
    assert np.array_equal(a, b)
    _check_convention(KMeansPartitioner(n_regions=4)(np.zeros((16, 20))), (16, 20))


# ---------------------------------------------------------------- cache


def test_cache_hits_and_keys(tmp_path):
    fake = _Counting()
    cache = RegionCache(tmp_path, fake)
    image = np.random.default_rng(0).random((10, 12)).astype(np.float32)
    first = cache(image)
    second = cache.partition(image.copy())
    assert fake.calls == 1 and np.array_equal(first, second) and second.dtype == np.int32
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1 and np.load(files[0]).dtype == np.int16
    assert not list(tmp_path.glob("*.tmp"))
    cache(image.astype(np.float64))  # another dtype is another key
    fake.config = {"version": 2}  # other parameters: another key
    cache(image)
    assert fake.calls == 3


def test_corrupt_cache_file_is_recomputed(tmp_path):
    fake = _Counting()
    cache = RegionCache(tmp_path, fake)
    image = np.ones((6, 6))
    expected = cache(image)
    path = tmp_path / f"{cache.key(image)}.npy"
    for junk in (b"not a numpy file", b""):
        path.write_bytes(junk)
        assert np.array_equal(cache(image), expected)
    np.save(path, np.zeros((6, 6), np.int16))  # readable but invalid (ids < 1)
    assert np.array_equal(cache(image), expected)
    assert fake.calls == 4
    assert np.array_equal(np.load(path), expected)  # rewritten


def test_cache_uses_int32_for_many_ids(tmp_path):
    class Many(_Counting):
        def __call__(self, image):
            return np.arange(1, image.size + 1, dtype=np.int32).reshape(image.shape)

    cache = RegionCache(tmp_path, Many())
    ids = cache(np.zeros((200, 200)))
    assert ids.max() == 40000 and np.load(next(tmp_path.glob("*.npy"))).dtype == np.int32


# ---------------------------------------------------------------- factory


def test_make_partitioner():
    assert isinstance(make_partitioner("kmeans", n_regions=3), KMeansPartitioner)
    sam = make_partitioner("sam", points_per_side=2)
    assert isinstance(sam, SamGridPartitioner) and sam.faithful
    with pytest.raises(ValueError, match="sam, kmeans"):
        make_partitioner("slic")
    with pytest.raises(ValueError):
        KMeansPartitioner()(np.zeros((2, 3, 4)))


# ---------------------------------------------------------------- LiteMedSAM box grid


class _FakePredictor:
    """Returns a disc for boxes that enclose it, else a box-shaped blob with a low score."""

    def __init__(self) -> None:
        self.calls = 0

    def set_stack(self, stack):
        assert stack.dtype == np.uint8 and stack.shape == (1, 128, 128)

    def predict(self, index, box=None, points=None, point_labels=None):
        self.calls += 1
        x0, y0, x1, y1 = box
        for centre, radius in (((44, 44), 20), ((88, 88), 15)):
            cy, cx = centre
            if x0 <= cx - radius and x1 >= cx + radius and y0 <= cy - radius and y1 >= cy + radius:
                return _disc(centre, radius), 0.97
        blob = np.zeros((128, 128), bool)
        blob[int(y0) + 2 : int(y1) - 1, int(x0) + 2 : int(x1) - 1] = True
        return blob, 0.7


def test_sam_grid_logic_with_a_fake_predictor():
    part = SamGridPartitioner(points_per_side=4, box_scales=(0.5,), refine_steps=1)
    fake = _FakePredictor()
    part._predictor = fake
    ids = part(_two_discs())
    _check_convention(ids, (128, 128))
    assert fake.calls == 16 * 2
    assert ids[44, 44] != ids[88, 88]
    assert len({ids[44, 44], ids[88, 88], ids[2, 2]}) == 3  # duplicates of a disc merged
    assert (ids == ids[44, 44]).sum() == _disc((44, 44), 20).sum()


@pytest.mark.slow
def test_sam_grid_separates_two_discs_with_real_weights():
    """Shipped LiteMedSAM weights, 4 x 4 grid, one box size: 48 decoder calls
    (5-60 s on 2 busy CPU cores)."""
    part = SamGridPartitioner(points_per_side=4, pred_iou_thresh=0.9, box_scales=(0.5,))
    ids = part(_two_discs())
    _check_convention(ids, (128, 128))
    inner1, inner2 = _disc((44, 44), 17), _disc((88, 88), 12)
    id1 = np.bincount(ids[inner1]).argmax()
    id2 = np.bincount(ids[inner2]).argmax()
    assert (ids[inner1] == id1).mean() > 0.9 and (ids[inner2] == id2).mean() > 0.9
    assert len({id1, id2, ids[2, 2]}) == 3


@pytest.mark.slow
def test_batched_box_decoding_gives_the_one_box_masks():
    """All boxes of a slice in a few decoder calls (``medseg.inference.sam_boxes``): the same
    refined masks, scores and region map as one decoder call per box (shipped weights; 36
    box decodes, 10-80 s on 2 busy CPU cores)."""
    from medseg.inference.sam_boxes import refined_box_masks

    one = SamGridPartitioner(points_per_side=2, box_scales=(0.3, 0.6), prompts_per_call=1)
    ids_one = one(_two_discs())
    predictor = one._predictor
    calls = []
    decoder = predictor.net.mask_decoder
    hook = decoder.register_forward_hook(lambda m, args, out: calls.append(len(out[0])))
    try:
        batched = SamGridPartitioner(points_per_side=2, box_scales=(0.3, 0.6), prompts_per_call=3)
        batched._predictor = predictor
        ids_batched = batched(_two_discs())
    finally:
        hook.remove()
    np.testing.assert_array_equal(ids_batched, ids_one)
    assert len(calls) <= 3 * 3 and max(calls) > 1  # 8 boxes x 3 rounds in chunks of 3
    boxes = [[10, 10, 70, 70], [30, 40, 50, 60]]
    masks, ious = refined_box_masks(predictor, boxes, refine_steps=2, chunk=3)
    for box, mask, iou in zip(boxes, masks, ious, strict=True):
        expected, score = one._one_by_one(predictor, box)
        np.testing.assert_array_equal(mask, expected)
        assert iou == pytest.approx(score, abs=1e-5)
