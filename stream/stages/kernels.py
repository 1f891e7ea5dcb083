"""Numba kernels of the boxes stage: connected components with stats in one pass over the map.

The class map is scanned once, row by row, for runs of item pixels; overlapping runs of adjacent rows
are joined with union-find. Runs, not pixels, are the unit of union-find, so the cost is one read per
pixel plus work per run; stats are summed per run (area, bbox, coordinate sums) and per pixel only
where a per-pixel value is needed (confidence, class). Background is skipped eight bytes at a time.

Every kernel is ``nogil`` and cached. The public entry point ``extract`` only reads its inputs; it
writes only the label image it returns and the caller's scratch buffers (``runs``, ``pix``), which
exist so that a 30 fps stream does not allocate and page-fault 30 MB of working memory per frame.
Numba kernels take their arrays positionally, hence the PLR0917 exemptions.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Codes of the per-class lookup table read for every pixel.
BG, SEED, GROW, UNKNOWN = 0, 1, 2, 3
# Rows of the ``runs`` scratch buffer.
R_Y, R_X0, R_X1, R_PARENT, R_LABEL = 0, 1, 2, 3, 4
N_RUN_ROWS = 5


def runs_capacity(h: int, w: int) -> int:
    """The most runs an h x w map can hold (every other pixel set)."""
    return h * ((w + 1) // 2)


@njit(nogil=True, cache=True, inline="always")
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving keeps the trees flat
        i = parent[i]
    return i


@njit(nogil=True, cache=True, inline="always")
def _join(parent, rx0, rx1, p, cur_start, nr, d):  # noqa: PLR0917
    """Join run ``nr`` with the previous row's runs ``[p, cur_start)`` it touches; returns the new p.

    Those runs are sorted by x: skip the ones wholly left of run nr, then join every one that
    overlaps it (widened by one pixel each side for 8-connectivity, d = 1).
    """
    x0 = rx0[nr]
    x1 = rx1[nr]
    while p < cur_start and rx1[p] + d <= x0:
        p += 1
    q = p
    while q < cur_start and rx0[q] < x1 + d:
        a = _find(parent, q)
        b = _find(parent, nr)
        if a != b:
            parent[max(a, b)] = min(a, b)  # the smaller root wins
        q += 1
    return p


@njit(nogil=True, cache=True)
def _scan(classes, words, lut, eight, runs, pix):  # noqa: PLR0917
    """Find SEED runs and join them across rows; list GROW pixels in ``pix[0]``; count UNKNOWN.

    Returns (n_runs, n_components, n_grow, n_unknown); run labels 1..n follow raster order.
    """
    h, w = classes.shape
    # Bound once, outside the loops: taking these views inside the hot loop costs a lot.
    ry = runs[R_Y]
    rx0 = runs[R_X0]
    rx1 = runs[R_X1]
    parent = runs[R_PARENT]
    rlabel = runs[R_LABEL]
    grow = pix[0]
    d = 1 if eight else 0
    skip = words.shape[0] > 0
    nr = 0
    ng = 0
    n_unknown = 0
    prev_start = 0  # the previous row's runs are [prev_start, cur_start)
    for y in range(h):
        cur_start = nr
        p = prev_start
        x = 0
        while x < w:
            i = y * w + x
            if skip and (i & 7) == 0 and x + 8 <= w and words[i >> 3] == 0:
                x += 8  # eight background pixels at once (skip is only set when id 0 is BG)
                continue
            v = lut[classes[y, x]]
            if v == SEED:
                x0 = x
                x += 1
                while x < w and lut[classes[y, x]] == SEED:
                    x += 1
                ry[nr] = y
                rx0[nr] = x0
                rx1[nr] = x
                parent[nr] = nr
                p = _join(parent, rx0, rx1, p, cur_start, nr, d)
                nr += 1
            else:
                if v == GROW:
                    grow[ng] = i
                    ng += 1
                elif v == UNKNOWN:
                    n_unknown += 1
                x += 1
        prev_start = cur_start
    # A root is the smallest run index of its set, so it is labelled before any run pointing to it
    # and labels follow raster order of first pixel, as scipy.ndimage.label's do.
    n = 0
    for i in range(nr):
        if parent[i] == i:
            n += 1
            rlabel[i] = n
        else:
            rlabel[i] = rlabel[_find(parent, i)]
    return nr, n, ng, n_unknown


@njit(nogil=True, cache=True)
def _flood(labels, classes, lut, queue, head, tail, eight, layers):  # noqa: PLR0917
    """Breadth-first spread of queued labels into unlabelled GROW pixels, at most ``layers`` pixel
    layers beyond the queued ones; returns the new tail."""
    h, w = labels.shape
    dys = np.array([-1, 0, 0, 1, -1, -1, 1, 1])
    dxs = np.array([0, -1, 1, 0, -1, 1, -1, 1])
    nnb = 8 if eight else 4
    done = 0
    while head < tail and done < layers:
        end = tail
        while head < end:
            g = queue[head]
            head += 1
            y = g // w
            x = g - y * w
            lab = labels[y, x]
            for k in range(nnb):
                yy = y + dys[k]
                xx = x + dxs[k]
                if 0 <= yy < h and 0 <= xx < w and labels[yy, xx] == 0 and lut[classes[yy, xx]] == GROW:
                    labels[yy, xx] = lab
                    queue[tail] = yy * w + xx
                    tail += 1
        done += 1
    return tail


@njit(nogil=True, cache=True)
def _grow(labels, classes, lut, pix, ng, n, eight, reach):  # noqa: PLR0917
    """Give each GROW pixel (``pix[0, :ng]``) within ``reach`` pixels of a seed the label of the
    nearest seed, breadth first.

    Rim pixels no seed reaches become components of their own (a thin item may be all rim: without
    the reach limit, a big neighbour it touches would swallow it), so every foreground pixel ends in
    exactly one component. Returns the new component count.
    """
    h, w = labels.shape
    grow = pix[0]
    queue = pix[1]  # every GROW pixel is queued at most once
    dys = np.array([-1, 0, 0, 1, -1, -1, 1, 1])
    dxs = np.array([0, -1, 1, 0, -1, 1, -1, 1])
    nnb = 8 if eight else 4
    tail = 0
    # First layer: rim pixels touching a seed. Only seed neighbours count here, so a pixel two
    # steps away cannot be claimed early through a rim pixel labelled earlier in this loop.
    for i in range(ng):
        g = grow[i]
        y = g // w
        x = g - y * w
        for k in range(nnb):
            yy = y + dys[k]
            xx = x + dxs[k]
            if 0 <= yy < h and 0 <= xx < w and lut[classes[yy, xx]] == SEED:
                labels[y, x] = labels[yy, xx]
                queue[tail] = g
                tail += 1
                break
    tail = _flood(labels, classes, lut, queue, 0, tail, eight, reach - 1)
    for i in range(ng):
        g = grow[i]
        y = g // w
        x = g - y * w
        if labels[y, x] == 0:
            n += 1
            labels[y, x] = n
            queue[tail] = g
            tail = _flood(labels, classes, lut, queue, tail, tail + 1, eight, h * w)
    return n


@njit(nogil=True, cache=True, fastmath=True)
def _row_sum(a, y, x0, x1):
    """Sum of a[y, x0:x1]. fastmath lets the sum be reordered and vectorised (about 3x faster); the
    last-bit difference is immaterial for a mean confidence."""
    s = 0.0
    for x in range(x0, x1):
        s += a[y, x]
    return s


@njit(nogil=True, cache=True)
def _accumulate(classes, confidence, has_conf, labels, runs, nr, pix, ng, n, n_classes):  # noqa: PLR0917
    """Per-label sums: area, box (min x, min y, max x + 1, max y + 1), (sum x, sum y, confidence x
    area), and class counts. Row 0 (no label) is unused. The confidence is the mean over the label's
    runs (its item-class pixels), or over all its pixels when it has none (an item that is all
    boundary): the boundary band an item grows back into carries the boundary class's probability and
    is a larger share of a small item than of a big one."""
    h, w = labels.shape
    area = np.zeros(n + 1, np.int64)
    box = np.empty((n + 1, 4), np.int32)
    box[:, 0] = w
    box[:, 1] = h
    box[:, 2:] = 0
    sums = np.zeros((n + 1, 3), np.float64)
    counts = np.zeros((n + 1, max(n_classes, 1)), np.int64)
    seed_n = np.zeros(n + 1, np.int64)
    grow_sum = np.zeros(n + 1, np.float64)
    for i in range(nr):
        y = runs[R_Y, i]
        x0 = runs[R_X0, i]
        x1 = runs[R_X1, i]
        lab = runs[R_LABEL, i]
        area[lab] += x1 - x0
        box[lab, 0] = min(box[lab, 0], x0)
        box[lab, 1] = min(box[lab, 1], y)
        box[lab, 2] = max(box[lab, 2], x1)
        box[lab, 3] = max(box[lab, 3], y + 1)
        sums[lab, 0] += 0.5 * (x0 + x1 - 1) * (x1 - x0)  # sum of x0..x1-1 without a pixel loop
        sums[lab, 1] += float(y) * (x1 - x0)
        seed_n[lab] += x1 - x0
        if has_conf:
            sums[lab, 2] += _row_sum(confidence, y, x0, x1)
        if n_classes > 0:
            for x in range(x0, x1):
                counts[lab, classes[y, x]] += 1
    for i in range(ng):
        g = pix[0, i]
        y = g // w
        x = g - y * w
        lab = labels[y, x]
        area[lab] += 1
        box[lab, 0] = min(box[lab, 0], x)
        box[lab, 1] = min(box[lab, 1], y)
        box[lab, 2] = max(box[lab, 2], x + 1)
        box[lab, 3] = max(box[lab, 3], y + 1)
        sums[lab, 0] += x
        sums[lab, 1] += y
        if has_conf:
            grow_sum[lab] += confidence[y, x]
        if n_classes > 0:
            counts[lab, classes[y, x]] += 1
    for lab in range(1, n + 1):
        if seed_n[lab] > 0:
            sums[lab, 2] *= area[lab] / seed_n[lab]
        else:
            sums[lab, 2] = grow_sum[lab]
    return area, box, sums, counts


MAX_MERGE_LABELS = 256  # more components than this (a noise map) are left unmerged


@njit(nogil=True, cache=True)
def _outlines(labels, n):
    """Per label: area, outline length and outline shared with each other label (row/column 0 =
    background). An outline edge is a 4-neighbour pixel pair of two labels, or a pixel side on the
    frame's edge (an item cut by the frame is not enclosed by its neighbour)."""
    h, w = labels.shape
    outline = np.zeros(n + 1, np.int64)
    area = np.zeros(n + 1, np.int64)
    shared = np.zeros((n + 1, n + 1), np.int64)
    for y in range(h):
        for x in range(w):
            a = labels[y, x]
            area[a] += 1
            if x + 1 < w:
                b = labels[y, x + 1]
                if a != b:
                    outline[a] += 1
                    outline[b] += 1
                    shared[a, b] += 1
                    shared[b, a] += 1
            if y + 1 < h:
                b = labels[y + 1, x]
                if a != b:
                    outline[a] += 1
                    outline[b] += 1
                    shared[a, b] += 1
                    shared[b, a] += 1
    for x in range(w):  # the frame's edge: outline shared with nobody
        outline[labels[0, x]] += 1
        outline[labels[h - 1, x]] += 1
    for y in range(h):
        outline[labels[y, 0]] += 1
        outline[labels[y, w - 1]] += 1
    return area, outline, shared


@njit(nogil=True, cache=True)
def _merge_enclosed(labels, runs, nr, n, share, weak):  # noqa: PLR0917
    """Merge each component into the bigger neighbour that holds the largest part of its outline,
    when that neighbour holds at least ``share`` of it or when their pair is ``weak`` (bool
    [n + 1, n + 1], from ``_weak_contacts``).

    A component most of whose outline is one bigger neighbour is a fragment of it (a printed panel,
    a cap or a highlight the segmenter outlined), not an item beside it: two items that touch share
    at most a side. Merged labels take the smaller (earlier) label, so labels keep raster order;
    merged-away labels end with no pixel. Rewrites ``labels`` and the runs' labels; returns the
    number of merges.
    """
    if n < 2 or n > MAX_MERGE_LABELS or share <= 0.0:
        return 0
    area, outline, shared = _outlines(labels, n)
    parent = np.arange(n + 1)
    merged = 0
    for a in range(1, n + 1):
        best, best_c = 0, 0
        for b in range(1, n + 1):
            if b != a and shared[a, b] > best_c and area[b] >= area[a]:
                best, best_c = b, shared[a, b]
        if best == 0 or (best_c < share * outline[a] and not weak[a, best]):
            continue
        ra = _find(parent, a)
        rb = _find(parent, best)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
            merged += 1
    if merged > 0:
        for lab in range(1, n + 1):
            parent[lab] = _find(parent, lab)
        h, w = labels.shape
        for y in range(h):
            for x in range(w):
                labels[y, x] = parent[labels[y, x]]
        for i in range(nr):
            runs[R_LABEL, i] = parent[runs[R_LABEL, i]]
    return merged


@njit(nogil=True, cache=True)
def _weak_contacts(labels, classes, lut, confidence, n, weak_conf, weak_area):  # noqa: PLR0917
    """bool [n + 1, n + 1]: pairs (a, b) of touching labels where a has at most ``weak_area`` times
    b's area and the boundary (GROW) pixels on their contact (the pixels of either label 4-adjacent
    to the other) have a mean confidence below ``weak_conf``: the segmenter is unsure that an edge
    between two items runs there. All False when either parameter is 0 (off) or when there are too
    many labels to merge."""
    weak = np.zeros((n + 1, n + 1), np.bool_)
    if weak_conf <= 0.0 or weak_area <= 0.0 or n < 2 or n > MAX_MERGE_LABELS:
        return weak
    area, total, count = _contact_sums(labels, classes, lut, confidence, n)
    for a in range(1, n + 1):
        for b in range(a + 1, n + 1):
            if count[a, b] > 0 and total[a, b] / count[a, b] < weak_conf:
                weak[a, b] = area[a] <= weak_area * area[b]
                weak[b, a] = area[b] <= weak_area * area[a]
    return weak


@njit(nogil=True, cache=True)
def _contact_sums(labels, classes, lut, confidence, n):
    """(area [n + 1], sum and count [n + 1, n + 1] of the confidence of GROW pixels on the contact of
    labels a < b, at [a, b])."""
    h, w = labels.shape
    area = np.zeros(n + 1, np.int64)
    total = np.zeros((n + 1, n + 1), np.float64)
    count = np.zeros((n + 1, n + 1), np.int64)
    for y in range(h):
        for x in range(w):
            a = labels[y, x]
            area[a] += 1
            if a == 0:
                continue
            for k in range(2):  # right and down neighbours: every 4-adjacent pair once
                yy = y + k
                xx = x + 1 - k
                if yy >= h or xx >= w:
                    continue
                b = labels[yy, xx]
                if b == 0 or b == a:  # noqa: PLR1714 (numba has no tuple `in`)
                    continue
                lo, hi = min(a, b), max(a, b)
                if lut[classes[y, x]] == GROW:
                    total[lo, hi] += confidence[y, x]
                    count[lo, hi] += 1
                if lut[classes[yy, xx]] == GROW:
                    total[lo, hi] += confidence[yy, xx]
                    count[lo, hi] += 1
    return area, total, count


@njit(nogil=True, cache=True)
def _keep(labels, runs, nr, pix, ng, area, min_area):  # noqa: PLR0917
    """Drop components under ``min_area`` pixels, relabel the rest 1..m in order; returns remap.

    Only runs and rim pixels are rewritten, never the whole image.
    """
    w = labels.shape[1]
    n = area.shape[0] - 1
    remap = np.zeros(n + 1, np.int32)
    m = 0
    for lab in range(1, n + 1):
        if area[lab] > 0 and area[lab] >= min_area:  # merged-away labels have no pixel
            m += 1
            remap[lab] = m
    if m < n:
        for i in range(nr):
            lab = runs[R_LABEL, i]
            if remap[lab] != lab:
                y = runs[R_Y, i]
                for x in range(runs[R_X0, i], runs[R_X1, i]):
                    labels[y, x] = remap[lab]
        for i in range(ng):
            g = pix[0, i]
            y = g // w
            x = g - y * w
            labels[y, x] = remap[labels[y, x]]
    return remap, m


@njit(nogil=True, cache=True)
def _pick_class(counts, item):
    """The most frequent item class of one component; one that is all rim takes the rim's class."""
    best = -1
    best_any = 0
    for c in range(counts.shape[0]):
        if counts[c] > counts[best_any]:
            best_any = c
        if item[c] and counts[c] > 0 and (best < 0 or counts[c] > counts[best]):
            best = c
    return best if best >= 0 else best_any


@njit(nogil=True, cache=True)
def extract(  # noqa: PLR0917
    classes,
    words,
    confidence,
    has_conf,
    lut,
    item,
    eight,
    min_area,
    runs,
    pix,
    reach,
    enclosed=0.0,
    weak_conf=0.0,
    weak_area=0.0,
):
    """Label the map and measure every component of at least ``min_area`` pixels.

    classes: uint8 [h, w]; words: the same bytes as uint64 (or empty: no background skipping);
    confidence: float32 [h, w] (read only if has_conf); lut: uint8 [256] BG/SEED/GROW/UNKNOWN per
    class id; item: bool [n_classes] (empty: no class counting, class 1 for all); runs: int32
    [5, >= runs_capacity] and pix: int32 [2, >= h*w] scratch; reach: how many pixels a seed grows
    into GROW (boundary) pixels; enclosed: merge a component into a neighbour holding at least
    this share of its outline (0 = never; see ``_merge_enclosed``); weak_conf, weak_area: also merge
    a component of at most ``weak_area`` times its neighbour's area into it when the boundary pixels
    between them have a mean confidence below ``weak_conf`` (``_weak_contacts``; needs has_conf and
    enclosed > 0; 0 = off). A component's confidence is the mean over its item-class pixels after
    merging (``_accumulate``).
    Returns (labels int32 [h, w] 0 = none, m, area int64 [m], box int32 [m, 4] xyxy with x2/y2
    exclusive, sums float64 [m, 3] (sum x, sum y, confidence x area; 0 without has_conf), class_id
    int32 [m], n_unknown).
    """
    h, w = classes.shape
    n_classes = item.shape[0]
    nr, n, ng, n_unknown = _scan(classes, words, lut, eight, runs, pix)
    labels = np.zeros((h, w), np.int32)
    for i in range(nr):
        y = runs[R_Y, i]
        lab = runs[R_LABEL, i]
        for x in range(runs[R_X0, i], runs[R_X1, i]):
            labels[y, x] = lab
    if ng > 0:
        n = _grow(labels, classes, lut, pix, ng, n, eight, reach)
    if enclosed > 0.0:
        weak = _weak_contacts(labels, classes, lut, confidence, n, weak_conf if has_conf else 0.0, weak_area)
        _merge_enclosed(labels, runs, nr, n, enclosed, weak)
    area, box, sums, counts = _accumulate(classes, confidence, has_conf, labels, runs, nr, pix, ng, n, n_classes)
    remap, m = _keep(labels, runs, nr, pix, ng, area, min_area)
    out_area = np.empty(m, np.int64)
    out_box = np.empty((m, 4), np.int32)
    out_sums = np.empty((m, 3), np.float64)
    class_id = np.ones(m, np.int32)
    for lab in range(1, n + 1):
        j = remap[lab] - 1
        if j >= 0:
            out_area[j] = area[lab]
            out_box[j] = box[lab]
            out_sums[j] = sums[lab]
            if n_classes > 0:
                class_id[j] = _pick_class(counts[lab], item)
    return labels, m, out_area, out_box, out_sums, class_id, n_unknown


@njit(nogil=True, cache=True)
def region_stats(labels, n, confidence, has_conf):
    """Area, box and sums (layout as ``extract``'s) of any label image, one pass over every pixel.

    Labels outside 1..n are ignored.
    """
    h, w = labels.shape
    area = np.zeros(n, np.int64)
    box = np.empty((n, 4), np.int32)
    box[:, 0] = w
    box[:, 1] = h
    box[:, 2:] = 0
    sums = np.zeros((n, 3), np.float64)
    for y in range(h):
        for x in range(w):
            j = labels[y, x] - 1
            if j < 0 or j >= n:
                continue
            area[j] += 1
            box[j, 0] = min(box[j, 0], x)
            box[j, 1] = min(box[j, 1], y)
            box[j, 2] = max(box[j, 2], x + 1)
            box[j, 3] = max(box[j, 3], y + 1)
            sums[j, 0] += x
            sums[j, 1] += y
            if has_conf:
                sums[j, 2] += confidence[y, x]
    return area, box, sums
