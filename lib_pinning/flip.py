"""LDR-ꟻLIP in torch: batched, float32, on whatever device the images are on.

Implements the image difference evaluator of "ꟻLIP: A Difference Evaluator for Alternating Images"
(Andersson, Nilsson, Akenine-Möller, Oskarsson, Åström, Fairchild; HPG 2020), following NVlabs' reference code
(https://github.com/NVlabs/flip: src/cpp/FLIP.h, which the `flip_evaluator` package runs, and
src/pytorch/flip_loss.py). The constants, colour transforms and the separable filters below follow that code, whose
licence is reproduced here:

    Copyright (c) 2020-2025, NVIDIA CORPORATION & AFFILIATES. All rights reserved.

    Redistribution and use in source and binary forms, with or without modification, are permitted provided that the
    following conditions are met:

    1. Redistributions of source code must retain the above copyright notice, this list of conditions and the
       following disclaimer.
    2. Redistributions in binary form must reproduce the above copyright notice, this list of conditions and the
       following disclaimer in the documentation and/or other materials provided with the distribution.
    3. Neither the name of the copyright holder nor the names of its contributors may be used to endorse or promote
       products derived from this software without specific prior written permission.

    THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR IMPLIED WARRANTIES,
    INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
    DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL,
    SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
    SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY,
    WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE
    USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.

    SPDX-License-Identifier: BSD-3-Clause

How the work is split: everything up to the point where two images meet depends on one image only, so it is done
once per image (`_preprocess`): sRGB -> linear RGB -> YCxCz, the contrast-sensitivity (CSF) filter, the move to
Hunt-adjusted L*a*b*, and the edge/point detector magnitudes of the feature pipeline. What is left per pair
(`FlipImages._differences`, `_error_maps`) is elementwise: HyAB colour distance, its re-mapping, the feature
difference and the final power.

LDR-ꟻLIP is symmetric in (test, reference): HyAB and |feature magnitude difference| are both symmetric, so
swapping the two images gives the same error up to float rounding. The argument names follow NVlabs' API anyway.
"""

import contextlib
import functools
import math

import torch
import torch.nn.functional as F

# The observer flip_evaluator assumes: a 0.7 m wide 3840-pixel monitor seen from 0.7 m (about 67.02 pixels/degree).
DEFAULT_PIXELS_PER_DEGREE = 0.7 * (3840 / 0.7) * math.pi / 180

# Colour pipeline (paper Sec. 4.1; FLIPConstants in FLIP.h).
QC = 0.7  # exponent applied to the HyAB distance
PC = 0.4  # errors below PC * cmax are spread over [0, PT] ...
PT = 0.95  # ... and the rest over (PT, 1]
# Feature pipeline (paper Sec. 4.2).
QF = 0.5  # exponent applied to the feature difference
FEATURE_PEAK_TO_TROUGH_DEGREES = 0.082  # w: edge detector's peak-to-trough distance = 2 standard deviations

# CSF of each opponent channel as a sum of two Gaussians in the paper's form a * sqrt(pi / b) * exp(-pi^2 x^2 / b):
# (a1, b1, a2, b2). b2 = 1e-5 only avoids a division by zero where a2 = 0.
CSF_ACHROMATIC = (1.0, 0.0047, 0.0, 1e-5)
CSF_RED_GREEN = (1.0, 0.0053, 0.0, 1e-5)
CSF_BLUE_YELLOW = (34.1, 0.04, 13.5, 0.025)

# D65 white point (XYZ) and linear sRGB <-> XYZ matrices, as in FLIP.h.
D65_WHITE = (0.950428545, 1.0, 1.088900371)
INV_D65_WHITE = (1.052156925, 1.0, 0.918357670)
LINEAR_RGB_TO_XYZ = (
    (10135552 / 24577794, 8788810 / 24577794, 4435075 / 24577794),
    (2613072 / 12288897, 8788810 / 12288897, 887015 / 12288897),
    (1425312 / 73733382, 8788810 / 73733382, 70074185 / 73733382),
)
XYZ_TO_LINEAR_RGB = (
    (3.241003275, -1.537398934, -0.498615861),
    (-0.969224334, 1.875930071, 0.041554224),
    (0.055639423, -0.204011202, 1.057148933),
)
LAB_DELTA = 6 / 29  # CIE L*a*b*: cube root above LAB_DELTA^3, a line below it

# Per-image cache layout: Hunt-adjusted L*a*b* (3 channels), edge and point detector magnitudes.
CACHED_CHANNELS = 5
# Peak working memory, in float32 maps, of one pair (maps of the image size) and of one image while it is
# preprocessed (maps of the padded size); with a byte budget they set how many pairs (images) go through at once.
PAIR_WORKSPACE_MAPS = 12
IMAGE_WORKSPACE_MAPS = 40
# Default working-memory budget per chunk. On CPU a budget that keeps a chunk in the last-level cache is fastest
# (one 512^2 pair at a time); accelerators want large batches. Both are small next to the cache of 64 images of
# 1024^2 (1.25 GiB).
CPU_CHUNK_BYTES = 16 * 2**20
ACCELERATOR_CHUNK_BYTES = 512 * 2**20

# ---------------------------------------------------------------- input checks


def _check_images(images, name):
    """Return `images` as a float32 (N,3,H,W) tensor, or raise ValueError saying what is wrong with it."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"flip: {name} must be a torch.Tensor, got {type(images).__name__}")
    shape = tuple(images.shape)
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise ValueError(f"flip: {name} must have shape (N,3,H,W) or (3,H,W), got {shape}")
    if images.shape[1] != 3:
        raise ValueError(f"flip: {name} must have 3 (RGB) channels in dimension -3, got shape {shape}")
    if images.numel() == 0:
        raise ValueError(f"flip: {name} is empty, shape {shape}")
    if not images.is_floating_point():
        raise ValueError(f"flip: {name} must be a floating-point tensor of sRGB values in [0,1], got {images.dtype}")
    images = images.to(torch.float32)
    low, high = (float(value) for value in torch.aminmax(images))  # NaN propagates into both
    if math.isnan(low) or math.isnan(high):
        raise ValueError(f"flip: {name} contains NaN values")
    if not (0 <= low and high <= 1):
        raise ValueError(f"flip: {name} must hold sRGB values in [0,1] (finite), found [{low:.4g}, {high:.4g}]")
    return images


def _check_pixels_per_degree(pixels_per_degree):
    if isinstance(pixels_per_degree, bool) or not isinstance(pixels_per_degree, (int, float)):
        raise ValueError(f"flip: pixels_per_degree must be a number, got {pixels_per_degree!r}")
    if not (math.isfinite(pixels_per_degree) and pixels_per_degree > 0):
        raise ValueError(f"flip: pixels_per_degree must be finite and positive, got {pixels_per_degree!r}")
    return float(pixels_per_degree)


def _check_chunk_bytes(chunk_bytes):
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes <= 0:
        raise ValueError(f"flip: chunk_bytes must be a positive int, got {chunk_bytes!r}")
    return chunk_bytes


# ---------------------------------------------------------------- colour transforms (per pixel)

# Every colour transform of the pipeline but two (the sRGB curve and L*a*b*'s cube root) is affine, so each one is
# a single 1x1 convolution with the matrix and offset below (computed in float64, applied in float32).
_F64 = torch.float64
# Linear RGB -> XYZ relative to the white point (x, y, z): the first step towards both YCxCz and L*a*b*.
_RGB_TO_RELATIVE_XYZ = torch.tensor(INV_D65_WHITE, dtype=_F64)[:, None] * torch.tensor(LINEAR_RGB_TO_XYZ, dtype=_F64)
# (x, y, z) -> (116 y - 16, 500 (x - y), 200 (y - z)): gives YCxCz from (x, y, z), and L*a*b* from Lab's f(x, y, z).
_OPPONENT = torch.tensor([[0.0, 116.0, 0.0], [500.0, -500.0, 0.0], [0.0, 200.0, -200.0]], dtype=_F64)
_OPPONENT_OFFSET = torch.tensor([-16.0, 0.0, 0.0], dtype=_F64)


def _affine(images, matrix, offset=None):
    """Apply `matrix` (out, in) and `offset` (out,) to the channels of images (N,in,H,W)."""
    weight = matrix.to(images).view(*matrix.shape, 1, 1)
    return F.conv2d(images, weight, None if offset is None else offset.to(images))


def _srgb_to_linear_rgb(srgb):
    return torch.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055).pow(2.4))


def _linear_rgb_to_filter_inputs(rgb):
    """The 8 channels the separable filters run on: YCxCz with Cz twice (its CSF is a sum of two separable
    Gaussians), then the achromatic channel normalized to [0,1], (Y + 16) / 116 = y, four times for the feature
    detectors' four responses (d/dx, d2/dx2, d/dy, d2/dy2)."""
    ycxcz = _OPPONENT @ _RGB_TO_RELATIVE_XYZ
    matrix = torch.cat((ycxcz[[0, 1, 2, 2]], _RGB_TO_RELATIVE_XYZ[[1, 1, 1, 1]]))
    offset = torch.cat((_OPPONENT_OFFSET, torch.zeros(5, dtype=_F64)))
    return _affine(rgb, matrix, offset)


def _filtered_ycxcz_to_linear_rgb(filtered):
    """Filter outputs (N,8,H,W) -> linear RGB: sums the two Cz parts and inverts YCxCz. The matrix has zero columns
    for the four feature channels so that the channels-last tensor is read whole rather than sliced and copied."""
    to_xyz = torch.linalg.inv(_OPPONENT)
    to_rgb = torch.tensor(XYZ_TO_LINEAR_RGB, dtype=_F64) @ torch.diag(torch.tensor(D65_WHITE, dtype=_F64))
    ycxcz_to_rgb = to_rgb @ to_xyz
    matrix = torch.cat((ycxcz_to_rgb[:, [0, 1, 2, 2]], torch.zeros(3, 4, dtype=_F64)), dim=1)
    return _affine(filtered, matrix, -ycxcz_to_rgb @ _OPPONENT_OFFSET)


def _linear_rgb_to_hunt_lab(rgb):
    """CIE L*a*b* with the Hunt adjustment (a and b scaled by 0.01 L), the space HyAB is measured in."""
    xyz = _affine(rgb, _RGB_TO_RELATIVE_XYZ)
    f = torch.where(xyz > LAB_DELTA**3, xyz.pow(1 / 3), xyz / (3 * LAB_DELTA**2) + 4 / 29)
    lab = _affine(f, _OPPONENT, _OPPONENT_OFFSET)
    lab[:, 1:].mul_(0.01 * lab[:, :1])
    return lab


def _hyab(lab_a, lab_b):
    """HyAB distance: city-block in lightness, Euclidean in the chromatic plane. Inputs (..., 3)."""
    delta = lab_a - lab_b
    return delta[..., 0].abs() + torch.hypot(delta[..., 1], delta[..., 2])


@functools.lru_cache(maxsize=1)
def _max_colour_error():
    """cmax: the HyAB distance between pure green and pure blue, raised to QC (the largest colour error)."""
    green_and_blue = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64).view(2, 3, 1, 1)
    green, blue = _linear_rgb_to_hunt_lab(green_and_blue).view(2, 3)
    return float(_hyab(green, blue)) ** QC


# ---------------------------------------------------------------- separable filters (1-D kernels, float64)


def _csf_radius(pixels_per_degree):
    widest = max(CSF_ACHROMATIC[1], CSF_ACHROMATIC[3], CSF_RED_GREEN[1], CSF_RED_GREEN[3], *CSF_BLUE_YELLOW[1::2])
    return math.ceil(3 * math.sqrt(widest / (2 * math.pi**2)) * pixels_per_degree)


def _csf_kernels(pixels_per_degree):
    """1-D CSF kernels for the channels (Y, Cx, Cz, Cz), shape (4, 2r+1).

    Y and Cx have one Gaussian each (their a2 is 0); the Cz filter is a sum of two Gaussians, so it is applied as
    two separable filters whose results are added (misc/separatedConvolutions.pdf): each 1-D factor carries the
    square root of its Gaussian's amplitude, and both are normalized together so that the 2-D sum is 1.
    """
    radius = _csf_radius(pixels_per_degree)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64) / pixels_per_degree

    def profile(scale):
        return torch.exp(-(math.pi**2) * x**2 / scale)

    achromatic = profile(CSF_ACHROMATIC[1])
    red_green = profile(CSF_RED_GREEN[1])
    a1, b1, a2, b2 = CSF_BLUE_YELLOW
    blue_yellow_1 = math.sqrt(a1 * math.sqrt(math.pi / b1)) * profile(b1)
    blue_yellow_2 = math.sqrt(a2 * math.sqrt(math.pi / b2)) * profile(b2)
    blue_yellow_norm = math.hypot(blue_yellow_1.sum(), blue_yellow_2.sum())
    return torch.stack(
        (
            achromatic / achromatic.sum(),
            red_green / red_green.sum(),
            blue_yellow_1 / blue_yellow_norm,
            blue_yellow_2 / blue_yellow_norm,
        )
    )


def _feature_kernels(pixels_per_degree):
    """1-D (Gaussian, 1st derivative, 2nd derivative) kernels of the edge/point detectors, shape (3, 2r+1).

    The Gaussian sums to 1; the positive and negative weights of each derivative sum to 1 and -1.
    """
    std = 0.5 * FEATURE_PEAK_TO_TROUGH_DEGREES * pixels_per_degree
    radius = math.ceil(3 * std)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    gaussian = torch.exp(-(x**2) / (2 * std**2))
    first = -x * gaussian
    second = (x**2 / std**2 - 1) * gaussian

    def balanced(kernel):
        return torch.where(kernel > 0, kernel / kernel[kernel > 0].sum(), kernel / -kernel[kernel < 0].sum())

    return torch.stack((gaussian / gaussian.sum(), balanced(first), balanced(second)))


@functools.lru_cache(maxsize=8)
def _filter_kernels(pixels_per_degree):
    """Row and column kernels (8, K) for the 8 channels of `_linear_rgb_to_filter_inputs`.

    CSF channels get their CSF kernel both ways. The four achromatic copies get (d/dx, d2/dx2, smooth, smooth)
    along rows and (smooth, smooth, d/dy, d2/dy2) along columns, which leaves (dx, dxx, dy, dyy): the 2-D edge and
    point detectors are separable that way (misc/separatedConvolutions.pdf). The narrower set of kernels is
    zero-padded to the wider one's width so that one padding and two convolutions do all the filtering.
    """
    csf = _csf_kernels(pixels_per_degree)
    gaussian, first, second = _feature_kernels(pixels_per_degree)
    width = max(csf.shape[1], gaussian.shape[0])

    def centred(kernels):
        extra = (width - kernels.shape[-1]) // 2
        return F.pad(kernels, (extra, extra))

    rows = torch.cat((centred(csf), centred(torch.stack((first, second, gaussian, gaussian)))))
    columns = torch.cat((centred(csf), centred(torch.stack((gaussian, gaussian, first, second)))))
    return rows, columns


def _filter_rows_then_columns(images, row_kernels, column_kernels):
    """Replicate-pad once, then convolve channel c with row_kernels[c] along x and column_kernels[c] along y.

    images (N,C,H,W), kernels (C,K). Padding both axes before the row pass equals FLIP.h's clamped indices.
    """
    channels, width = row_kernels.shape
    radius = width // 2
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    rows = F.conv2d(padded, row_kernels.to(images).view(channels, 1, 1, width), groups=channels)
    return F.conv2d(rows, column_kernels.to(images).view(channels, 1, width, 1), groups=channels)


# ---------------------------------------------------------------- per-image preprocessing


def _preprocess(srgb, pixels_per_degree):
    """(N,3,H,W) sRGB in [0,1] -> (N,5,H,W): Hunt-adjusted L*a*b* of the CSF-filtered image (clamped to the RGB
    cube first, as in the paper) and the edge and point detector magnitudes."""
    # Channels-last (pixel-interleaved) all the way: oneDNN's 1x1 and depthwise convolutions are many times faster.
    srgb = srgb.contiguous(memory_format=torch.channels_last)
    filter_inputs = _linear_rgb_to_filter_inputs(_srgb_to_linear_rgb(srgb))
    filtered = _filter_rows_then_columns(filter_inputs, *_filter_kernels(pixels_per_degree))
    hunt_lab = _linear_rgb_to_hunt_lab(_filtered_ycxcz_to_linear_rgb(filtered).clamp_(0, 1))
    dx, dxx, dy, dyy = filtered[:, 4:].unbind(1)
    return torch.cat((hunt_lab, torch.hypot(dx, dy).unsqueeze(1), torch.hypot(dxx, dyy).unsqueeze(1)), dim=1)


@contextlib.contextmanager
def _ieee_float32_convolutions(device):
    """Keep cuDNN from using TF32 (A1111 turns it on): its 10-bit mantissa in the colour transforms would put an
    error floor of about 1e-2 under nearly identical images. The previous setting is restored afterwards."""
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    if hasattr(cudnn, "conv"):  # torch >= 2.9: per-operation flags, which must not be mixed with allow_tf32
        owner, flag, exact = cudnn.conv, "fp32_precision", "ieee"
    else:
        owner, flag, exact = cudnn, "allow_tf32", False
    previous = getattr(owner, flag)
    setattr(owner, flag, exact)
    try:
        yield
    finally:
        setattr(owner, flag, previous)


@torch.no_grad()
def _preprocess_in_chunks(srgb, pixels_per_degree, chunk_bytes):
    """`_preprocess` a few images at a time into one contiguous (N,5,H,W) cache (planar, for the pair arithmetic)."""
    n, _, height, width = srgb.shape
    padding = _filter_kernels(pixels_per_degree)[0].shape[1] - 1
    bytes_per_image = IMAGE_WORKSPACE_MAPS * (height + padding) * (width + padding) * 4
    step = max(1, chunk_bytes // bytes_per_image)
    cached = torch.empty((n, CACHED_CHANNELS, height, width), dtype=torch.float32, device=srgb.device)
    with _ieee_float32_convolutions(srgb.device):
        for start in range(0, n, step):
            cached[start : start + step] = _preprocess(srgb[start : start + step], pixels_per_degree)
    return cached


# ---------------------------------------------------------------- per-pair error


def _error_maps(differences):
    """Per-pixel LDR-ꟻLIP errors (P,H,W) from cached[test] - cached[reference] (P,5,H,W), which it overwrites."""
    lightness, a, b, edge, point = differences.unbind(1)
    colour = torch.hypot(a, b).add_(lightness.abs_()).pow_(QC)  # HyAB distance ** QC
    # Re-map to [0,1]: [0, PC * cmax] linearly onto [0, PT], the rest onto (PT, 1]. That map is concave and
    # piecewise linear, so it is the smaller of its two lines.
    cmax = _max_colour_error()
    knee = PC * cmax
    low_line = colour * (PT / knee)
    high_line = colour.mul_((1 - PT) / (cmax - knee)).add_(PT - knee * (1 - PT) / (cmax - knee))
    colour = torch.minimum(low_line, high_line, out=low_line)
    feature = torch.maximum(edge.abs_(), point.abs_(), out=edge).mul_(1 / math.sqrt(2)).pow_(QF)
    return colour.pow_(feature.neg_().add_(1))


def _default_chunk_bytes(device):
    return CPU_CHUNK_BYTES if device.type == "cpu" else ACCELERATOR_CHUNK_BYTES


class FlipImages:
    """A set of images preprocessed once for LDR-ꟻLIP, to score many pairs among them cheaply.

    `images` is an (N,3,H,W) sRGB tensor in [0,1] (any float dtype, any device; computed in float32 on that device).
    The constructor runs everything that depends on one image only and keeps 5 float32 maps per image
    (N * 5 * H * W * 4 bytes: 1.25 GiB for 64 images of 1024^2). `errors` / `error_maps` then only do the per-pixel
    pair arithmetic. Work is chunked so that no step needs much more than `chunk_bytes` of working memory beyond the
    cache and the results (at least one image or pair goes through at a time); the default depends on the device.

    LDR-ꟻLIP is symmetric, so a pair's order only matters to the last float bit; pairs are (test, reference).
    Nothing here is differentiable (in-place arithmetic, run under no_grad): it is a loss for gradient-free search.
    """

    def __init__(self, images, pixels_per_degree=DEFAULT_PIXELS_PER_DEGREE, chunk_bytes=None):
        images = _check_images(images, "images")
        self.pixels_per_degree = _check_pixels_per_degree(pixels_per_degree)
        if chunk_bytes is None:
            chunk_bytes = _default_chunk_bytes(images.device)
        self.chunk_bytes = _check_chunk_bytes(chunk_bytes)
        self.cached = _preprocess_in_chunks(images, self.pixels_per_degree, self.chunk_bytes)

    def __len__(self):
        return self.cached.shape[0]

    def errors(self, pairs):
        """Mean LDR-ꟻLIP error (P,) of each (test_index, reference_index) pair.

        `pairs`: a sequence of index pairs or a (P,2) integer tensor.
        """
        return self._per_pair(pairs, lambda maps, chunk: maps.mean(dim=(1, 2)))

    def weighted_errors(self, pairs, weights, index):
        """Weighted mean LDR-ꟻLIP error (P,) of each pair: pair p's error map weighted by `weights[index[p]]`.

        `weights`: (M, H, W) non-negative maps; `index`: (P,) integers into them. A pair whose map weighs nothing
        has error 0 (nothing of it is compared).
        """
        weights = torch.as_tensor(weights, dtype=torch.float32, device=self.cached.device)
        index = torch.as_tensor(index, dtype=torch.int64, device=self.cached.device)
        totals = weights.sum(dim=(1, 2))

        def reduce(maps, chunk):
            chosen = index[chunk]
            sums = (maps.double() * weights[chosen].double()).sum(dim=(1, 2))
            total = totals[chosen].double()
            return torch.where(total > 0, sums / total.clamp(min=1e-300), torch.zeros_like(sums))

        return self._per_pair(pairs, reduce)

    def error_maps(self, pairs):
        """Per-pixel LDR-ꟻLIP errors (P,H,W) of each (test_index, reference_index) pair."""
        return self._per_pair(pairs, lambda maps, chunk: maps)

    def pairwise(self):
        """All pairs i < j (as a (P,2) int64 tensor on the cache's device) and their mean errors (P,)."""
        pairs = torch.triu_indices(len(self), len(self), offset=1, device=self.cached.device).T
        return pairs, self.errors(pairs)

    @torch.no_grad()
    def _per_pair(self, pairs, reduce):
        test_index, reference_index = self._check_pairs(pairs)
        height, width = self.cached.shape[2:]
        step = max(1, self.chunk_bytes // (PAIR_WORKSPACE_MAPS * height * width * 4))
        results = []
        for start in range(0, test_index.numel(), step):
            chunk = slice(start, start + step)
            results.append(reduce(_error_maps(self._differences(test_index[chunk], reference_index[chunk])), chunk))
        if not results:
            return reduce(torch.empty((0, height, width), device=self.cached.device), slice(0, 0))
        return torch.cat(results)

    def _differences(self, test_index, reference_index):
        """cached[test] - cached[reference] per pair (P,5,H,W): straight from views for one pair, else gathered."""
        if test_index.numel() == 1:
            test, reference = int(test_index), int(reference_index)
            return self.cached[test : test + 1] - self.cached[reference : reference + 1]
        return self.cached.index_select(0, test_index).sub_(self.cached.index_select(0, reference_index))

    def _check_pairs(self, pairs):
        if not isinstance(pairs, torch.Tensor):
            pairs = list(pairs)
            pairs = torch.tensor(pairs) if pairs else torch.empty((0, 2), dtype=torch.int64)
        if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.is_floating_point() or pairs.is_complex():
            raise ValueError(f"flip: pairs must be (test_index, reference_index) integers, got {tuple(pairs.shape)}")
        pairs = pairs.to(device=self.cached.device, dtype=torch.int64)
        low, high = (int(pairs.min()), int(pairs.max())) if pairs.numel() else (0, 0)
        if low < 0 or high >= len(self):
            raise ValueError(f"flip: pair indices must lie in [0, {len(self)}), got [{low}, {high}]")
        return pairs[:, 0], pairs[:, 1]


def _test_reference_pairs(test, reference, pixels_per_degree, chunk_bytes):
    """Cache test and reference images together; return the cache and the (test k, its reference) index pairs."""
    test = _check_images(test, "test")
    reference = _check_images(reference, "reference")
    test_size, reference_size = tuple(test.shape[2:]), tuple(reference.shape[2:])
    if test_size != reference_size:
        raise ValueError(f"flip: test and reference sizes differ: {test_size} vs {reference_size}")
    if reference.shape[0] not in (1, test.shape[0]):
        raise ValueError(f"flip: expected 1 or {test.shape[0]} reference images, got {reference.shape[0]}")
    if test.device != reference.device:
        raise ValueError(f"flip: test is on {test.device} but reference is on {reference.device}")
    images = FlipImages(torch.cat((test, reference)), pixels_per_degree, chunk_bytes)
    n = test.shape[0]
    test_index = torch.arange(n)
    reference_index = n + (test_index if reference.shape[0] == n else torch.zeros_like(test_index))
    return images, torch.stack((test_index, reference_index), dim=1)


def flip_error(test, reference, pixels_per_degree=DEFAULT_PIXELS_PER_DEGREE, chunk_bytes=None):
    """Mean LDR-ꟻLIP error (N,) of (N,3,H,W) sRGB `test` images in [0,1] against `reference`.

    `reference` is (N,3,H,W) (one per test image) or a single (1,3,H,W) / (3,H,W) image used for every test image.
    The default pixels per degree is flip_evaluator's (about 67.02); `chunk_bytes` as for `FlipImages`.
    """
    images, pairs = _test_reference_pairs(test, reference, pixels_per_degree, chunk_bytes)
    return images.errors(pairs)


def flip_map(test, reference, pixels_per_degree=DEFAULT_PIXELS_PER_DEGREE, chunk_bytes=None):
    """Per-pixel LDR-ꟻLIP error maps (N,H,W), in [0,1]; arguments as for `flip_error` (whose value is their mean)."""
    images, pairs = _test_reference_pairs(test, reference, pixels_per_degree, chunk_bytes)
    return images.error_maps(pairs)
