"""Image preprocessing shared by every data source: grayscale, crop, resize.

This module owns the path from one decoded image (numpy array or PIL image, any common mode) to the
uint8[H, W] grayscale array that goes into a `Dataset`:

  to_grayscale   RGB/RGBA/palette/16-bit/float -> uint8 L with Pillow's ITU-R 601-2 luma
                 (L = 299/1000 R + 587/1000 G + 114/1000 B), as the paper converts RGB to gray;
  crop           none | box (config.data.crop_box) | sector (automatic fan mask: keeps the
                 ultrasound sector and blanks burned-in text, ECG traces, rulers, colour bars);
  resize         Pillow bilinear resize to image_size x image_size (the paper: 224 x 224);
  preprocess     all three in that order.

Normalisation (mean/std, float conversion) is NOT done here: it happens inside the jitted model, so
images stay uint8 on the host and on the device. Everything is pure numpy/scipy/Pillow.
"""

from typing import Sequence, Tuple, Union

import numpy as np
from PIL import Image
from PIL import ImageDraw
from scipy import ndimage
from scipy import spatial

from nasrl_jax.errors import UserInputError

ImageLike = Union[np.ndarray, Image.Image]

CROP_MODES = ("none", "box", "sector")

# Pillow modes whose convert('L') is exact and meaningful (8-bit data, palette, colour spaces).
_PIL_8BIT_MODES = ("1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
                   "HSV")


def _array_to_uint8(arr: np.ndarray) -> np.ndarray:
  """Brings any numeric array to uint8 without per-image contrast stretching.

  Echogenicity (absolute brightness) is a diagnostic cue, so we never min-max normalise per image:
  integer types are scaled by their full range (uint16 -> /257), floats are read as [0, 1] when
  their maximum is <= 1 and as [0, 255] otherwise (clipped).
  """
  if arr.dtype == np.uint8:
    return arr
  if arr.dtype == np.bool_:
    return arr.astype(np.uint8) * 255
  if np.issubdtype(arr.dtype, np.integer):
    info = np.iinfo(arr.dtype)
    lo = min(info.min, 0)
    scaled = (arr.astype(np.float64) - lo) * (255.0 / (info.max - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
  if np.issubdtype(arr.dtype, np.floating):
    a = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    if a.size and a.max() <= 1.0:
      a = a * 255.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)
  raise UserInputError(f"image dtype {arr.dtype} is not a numeric image type")


def to_grayscale(img: ImageLike) -> np.ndarray:
  """Converts an image to 8-bit grayscale with Pillow's ITU-R 601-2 luma transform.

  Args:
    img: a PIL image (any mode) or a numpy array [H, W], [H, W, 1], [H, W, 3] (RGB) or [H, W, 4]
      (RGBA; alpha is ignored). Non-uint8 arrays are scaled by their dtype range (see
      `_array_to_uint8`), never contrast-stretched per image.

  Returns:
    uint8[H, W].
  """
  if isinstance(img, Image.Image):
    if img.mode in _PIL_8BIT_MODES:
      return np.asarray(img.convert("L"), dtype=np.uint8)
    # 16-bit ('I;16*'), 32-bit int ('I') and float ('F') images: convert('L') would clip at 255,
    # so go through numpy and scale by the dtype range instead.
    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
      raise UserInputError(f"image mode {img.mode!r} cannot be converted to grayscale")
    arr = np.asarray(img)
    if img.mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
      arr = arr.astype(np.uint16)  # 'I' is how Pillow opens most 16-bit PNG/TIFF files.
    return to_grayscale(arr)
  arr = np.asarray(img)
  if arr.ndim == 3 and arr.shape[-1] == 1:
    arr = arr[..., 0]
  if arr.ndim == 2:
    return np.ascontiguousarray(_array_to_uint8(arr))
  if arr.ndim == 3 and arr.shape[-1] in (3, 4):
    rgb = np.ascontiguousarray(_array_to_uint8(arr[..., :3]))
    return np.asarray(Image.fromarray(rgb, mode="RGB").convert("L"), dtype=np.uint8)
  raise UserInputError(
      f"image of shape {arr.shape}: expected [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]")


def validate_config(data_cfg) -> None:
  """Checks the preprocessing fields of `config.data` before any image is read.

  Args:
    data_cfg: `config.data` (uses crop, crop_box, image_size).

  Raises:
    UserInputError: naming the bad field.
  """
  if data_cfg.crop not in CROP_MODES:
    raise UserInputError(
        f"config.data.crop={data_cfg.crop!r}: must be one of {', '.join(CROP_MODES)}")
  size = data_cfg.image_size
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
    raise UserInputError(f"config.data.image_size={size!r}: must be a positive integer")
  if data_cfg.crop == "box":
    box = tuple(data_cfg.crop_box)
    if (len(box) != 4 or not all(isinstance(v, (int, np.integer)) for v in box)
        or min(box) < 0 or box[2] < 1 or box[3] < 1):
      raise UserInputError(
          f"config.data.crop_box={box!r}: must be 4 integers (top, left, height, width) with "
          "top, left >= 0 and height, width >= 1")


def check_box_fits(height: int, width: int, data_cfg, where: str = "image") -> None:
  """Raises if `config.data.crop_box` does not fit an image of the given size (crop == box only).

  Loaders call this while validating, from image headers, before decoding in bulk.

  Args:
    height: image height in pixels.
    width: image width in pixels.
    data_cfg: `config.data`.
    where: what to name in the error (file and row).
  """
  if data_cfg.crop != "box":
    return
  top, left, h, w = (int(v) for v in data_cfg.crop_box)
  if top + h > height or left + w > width:
    raise UserInputError(
        f"{where}: config.data.crop_box=(top={top}, left={left}, height={h}, width={w}) does not "
        f"fit the {height}x{width} image")


def _disk_erode(mask: np.ndarray, radius: float, border: bool) -> np.ndarray:
  """Binary erosion by a disk, via the Euclidean distance transform (O(HW), any radius).

  `border` is what lies outside the image: True for the erosion inside a closing (so a closing
  never eats into a full-frame image), False inside an opening (the frame edge is background).
  """
  if radius <= 0 or not mask.any():
    return mask
  if border:
    if mask.all():  # The EDT of an array without zeros is undefined (scipy returns junk).
      return mask
    return ndimage.distance_transform_edt(mask) > radius
  padded = np.pad(mask, 1, constant_values=False)
  return (ndimage.distance_transform_edt(padded) > radius)[1:-1, 1:-1]


def _disk_dilate(mask: np.ndarray, radius: float) -> np.ndarray:
  """Binary dilation by a disk, via the Euclidean distance transform."""
  if radius <= 0 or not mask.any():
    return mask
  return ndimage.distance_transform_edt(~mask) <= radius


def _largest_component(mask: np.ndarray) -> np.ndarray:
  labels, n = ndimage.label(mask)
  if n == 0:
    return mask
  sizes = np.bincount(labels.ravel())
  sizes[0] = 0
  return labels == int(np.argmax(sizes))


def _convex_hull(mask: np.ndarray) -> np.ndarray:
  """The filled convex hull of a binary mask (scipy's qhull + Pillow's polygon fill)."""
  # Only boundary pixels can be hull vertices: qhull then sees ~1 % of the points.
  rows, cols = np.nonzero(mask & ~ndimage.binary_erosion(mask))
  if rows.size < 3 or np.ptp(rows) == 0 or np.ptp(cols) == 0:
    return mask
  # Pixel corners, so a hull of pixel centres does not shave half a pixel off every edge.
  pts = np.concatenate([np.stack([cols + dx, rows + dy], 1)
                        for dx in (-0.5, 0.5) for dy in (-0.5, 0.5)])
  hull = spatial.ConvexHull(pts)
  canvas = Image.new("1", (mask.shape[1], mask.shape[0]), 0)
  ImageDraw.Draw(canvas).polygon([tuple(p) for p in pts[hull.vertices]], fill=1)
  return np.asarray(canvas, dtype=bool) | mask


def sector_mask(gray: np.ndarray, threshold: float = 12.0, close_frac: float = 0.004,
                open_frac: float = 0.03, min_area_frac: float = 0.05,
                work_side: int = 256) -> np.ndarray:
  """Finds the ultrasound fan (sector) of a scan-converted B-mode screen image.

  Recipe: pixels > threshold; closing by a ~1 px disk (joins speckle, but not the ruler dots a few
  pixels off the fan edge); fill holes (anechoic vessels); opening by a larger disk, which deletes
  thin or small things (text glyphs, ECG traces, ruler ticks, narrow colour/grey bars) and thin
  attachments; largest connected component; its convex hull. The hull gives back the corners and
  apex the opening rounded off and the dark pockets (shadows, vessels) on the fan's border, and
  nothing outside a straight fan edge. Fans are convex (phased sector, linear) or nearly so
  (curvilinear: the hull adds the black lens above the probe face).

  Defaults were tuned on 40 simulator renders with burned-in text, ruler dots and markers on
  every image (`synthetic.fan_mask` as truth): 0.01 % of overlay pixels kept (worst image 0.1 %),
  96.7 % of fan pixels kept on average. Fan parts that are pure black (deep rib shadows, far field
  below the display floor) are invisible to any intensity rule and fall outside (see
  docs/notes_sources.md).

  Sizes are fractions of min(H, W) so the same defaults work at 96 px and at 1024 px.

  Args:
    gray: uint8[H, W].
    threshold: gray level (0..255) above which a pixel is "lit".
    close_frac: radius of the closing disk.
    open_frac: radius of the opening disk: blobs narrower than twice this are removed.
    min_area_frac: if the fan found covers less than this fraction of the image, the scan is
      treated as having no recognisable fan and the whole frame is kept.
    work_side: the mask is computed on a copy shrunk (box filter) so that its shorter side is at
      most this many pixels, then scaled back with nearest neighbour: 3-4x faster on 434 x 636
      screens, boundary accurate to about one source pixel per shrink factor.

  Returns:
    bool[H, W]; all True when no fan is found (blank image, linear-probe full-frame image).
  """
  gray = np.asarray(gray)
  if gray.ndim != 2:
    raise UserInputError(f"sector_mask expects a 2-D grayscale image, got shape {gray.shape}")
  full_shape = gray.shape
  if min(full_shape) > work_side:
    scale = work_side / min(full_shape)
    small_hw = (max(1, round(full_shape[1] * scale)), max(1, round(full_shape[0] * scale)))
    gray = np.asarray(Image.fromarray(np.ascontiguousarray(gray, np.uint8), mode="L").resize(
        small_hw, resample=Image.Resampling.BOX))
  side = min(gray.shape)
  lit = gray > threshold
  r_close = max(1.0, close_frac * side)
  closed = _disk_erode(_disk_dilate(lit, r_close), r_close, border=True)
  filled = ndimage.binary_fill_holes(closed)
  r_open = max(1.0, open_frac * side)
  opened = _disk_dilate(_disk_erode(filled, r_open, border=False), r_open)
  core = _largest_component(opened)
  if core.sum() < min_area_frac * gray.size:
    return np.ones(full_shape, dtype=bool)
  mask = _convex_hull(core)
  if mask.shape != full_shape:
    big = Image.fromarray(mask.astype(np.uint8) * 255, mode="L").resize(
        (full_shape[1], full_shape[0]), resample=Image.Resampling.NEAREST)
    mask = np.asarray(big) > 127
  return mask


def crop(img: np.ndarray, data_cfg) -> np.ndarray:
  """Crops a grayscale image as `config.data.crop` says.

  Args:
    img: uint8[H, W] grayscale.
    data_cfg: `config.data`; crop = none | box (crop_box = top, left, height, width) | sector
      (bounding box of `sector_mask`, zero outside the mask).

  Returns:
    uint8[h, w].
  """
  img = np.asarray(img)
  mode = data_cfg.crop
  if mode == "none":
    return img
  if mode == "box":
    validate_config(data_cfg)
    check_box_fits(img.shape[0], img.shape[1], data_cfg)
    top, left, h, w = (int(v) for v in data_cfg.crop_box)
    return img[top:top + h, left:left + w]
  if mode == "sector":
    mask = sector_mask(img)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return np.where(mask, img, 0).astype(np.uint8)[r0:r1, c0:c1]
  raise UserInputError(
      f"config.data.crop={mode!r}: must be one of {', '.join(CROP_MODES)}")


def resize(img: np.ndarray, size: Union[int, Sequence[int]]) -> np.ndarray:
  """Resizes a uint8 grayscale image with Pillow (bilinear, antialiased when shrinking).

  The aspect ratio is not kept, as in the paper (every image becomes 224 x 224).

  Args:
    img: uint8[H, W].
    size: output side (square) or (height, width).

  Returns:
    uint8[size, size] or uint8[height, width].
  """
  if isinstance(size, (int, np.integer)):
    out_h, out_w = int(size), int(size)
  else:
    out_h, out_w = (int(v) for v in size)
  img = np.ascontiguousarray(img, dtype=np.uint8)
  if img.shape == (out_h, out_w):
    return img
  pil = Image.fromarray(img, mode="L")
  return np.asarray(pil.resize((out_w, out_h), resample=Image.Resampling.BILINEAR), np.uint8)


def preprocess(img: ImageLike, data_cfg) -> np.ndarray:
  """Grayscale, crop and resize one image.

  Args:
    img: numpy array or PIL image (see `to_grayscale`).
    data_cfg: `config.data` (crop, crop_box, image_size).

  Returns:
    uint8[image_size, image_size].
  """
  gray = to_grayscale(img)
  return resize(crop(gray, data_cfg), int(data_cfg.image_size))


def output_shape(data_cfg) -> Tuple[int, int, int]:
  """The per-image shape a loader stacks into `Dataset.images`: (size, size, 1)."""
  return (int(data_cfg.image_size), int(data_cfg.image_size), 1)
