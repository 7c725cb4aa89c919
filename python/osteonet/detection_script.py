"""The whole Faster R-CNN as a TorchScript program that needs neither osteonet nor torchvision (issue 19).

``osteonet.export(detector, path, "torchscript", part="detector")`` writes it: images (a list of C x H x W tensors
in [0, 1]) in, one dict per image (``boxes`` x1 y1 x2 y2 in the input image's pixels, ``labels``, ``scores``) out,
as the detector's eval forward returns them. The backbone + FPN + RPN head are the traced tensor part (see
osteonet.export); everything data-dependent is scripted here on plain torch operators, each a transcription of
osteonet's C++ (include/osteonet/detection/, itself torchvision's Faster R-CNN):

* the transform: normalise, resize (shorter side ``min_size``, longer at most ``max_size``, bilinear), zero-pad to
  the traced batch size (the traced part has fixed spatial sizes: an image whose padded size differs raises);
* the RPN: anchors (precomputed for that size), box decoding, top-n per level, clipping, small boxes, score
  threshold, NMS per level, post-NMS top-n;
* the RoI heads: multi-scale RoIAlign (torchvision's level mapping and sampling, ``aligned=False``), the box head
  and predictor (their own Linear layers), per-class decoding, score threshold, small boxes, NMS per class;
* the boxes mapped back to each input image's size.

NMS is torchvision's greedy CPU loop (stable sort by score, suppress IoU > threshold) written with tensor ops;
RoIAlign samples with torchvision's bilinear rules by gathering. Both equal the C++ ones up to float rounding.
"""

from __future__ import annotations

import math
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DetectorProgram"]


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    area1 = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area2 = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[:, :2])
    rb = torch.min(a[:, None, 2:], b[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    return inter / (area1[:, None] + area2 - inter)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """torchvision.ops.nms: indices kept, by decreasing score (stable sort), suppressing IoU > threshold."""
    if boxes.size(0) == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.sort(scores, dim=0, descending=True, stable=True)[1]
    b = boxes.index_select(0, order)
    # torchvision's loop compares box i with later boxes j: IoU as iarea + areas[j] - inter, row by row
    over = box_iou(b, b) > iou_threshold
    n = b.size(0)
    suppressed = torch.zeros(n, dtype=torch.bool)
    keep: List[int] = []
    for i in range(n):
        if not bool(suppressed[i]):
            keep.append(i)
            suppressed = suppressed | over[i]
    return order.index_select(0, torch.tensor(keep, dtype=torch.long))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """torchvision.ops.batched_nms: per category above 4000 coordinates, else the coordinate-offset trick."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    if boxes.numel() > 4000:
        keep_mask = torch.zeros_like(scores, dtype=torch.bool)
        classes: List[int] = torch.unique(idxs).tolist()
        for c in classes:
            curr = torch.where(idxs == c)[0]
            keep = nms(boxes.index_select(0, curr), scores.index_select(0, curr), iou_threshold)
            keep_mask[curr.index_select(0, keep)] = True
        keep_indices = keep_mask.nonzero().view(-1)
        order = torch.sort(scores.index_select(0, keep_indices), dim=0, descending=True)[1]
        return keep_indices.index_select(0, order)
    offsets = idxs.to(boxes.dtype) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def clip_boxes(boxes: Tensor, h: int, w: int) -> Tensor:
    bx = boxes[..., 0::2].clamp(0, w)
    by = boxes[..., 1::2].clamp(0, h)
    return torch.stack([bx, by], boxes.dim()).reshape(boxes.shape)


def remove_small(boxes: Tensor, min_size: float) -> Tensor:
    ws = boxes[:, 2] - boxes[:, 0]
    hs = boxes[:, 3] - boxes[:, 1]
    return torch.where((ws >= min_size) & (hs >= min_size))[0]


def decode(codes: Tensor, boxes: Tensor, weights: List[float], clip: float) -> Tensor:
    """K x 4C deltas on K x 4 boxes -> K x 4C boxes (torchvision's BoxCoder.decode_single)."""
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    dx = codes[:, 0::4] / weights[0]
    dy = codes[:, 1::4] / weights[1]
    dw = (codes[:, 2::4] / weights[2]).clamp(max=clip)
    dh = (codes[:, 3::4] / weights[3]).clamp(max=clip)
    pcx = dx * widths[:, None] + ctr_x[:, None]
    pcy = dy * heights[:, None] + ctr_y[:, None]
    pw = torch.exp(dw) * widths[:, None]
    ph = torch.exp(dh) * heights[:, None]
    return torch.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], 2).flatten(1)


def _axis_samples(start: Tensor, size: Tensor, pooled: int, grid: int,
                  limit: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """torchvision's RoIAlign sampling along one axis: for each RoI (R) and sample (pooled * grid), the low and
    high pixel and their weights (0 outside the map)."""
    bin_size = size / pooled
    steps = torch.arange(pooled * grid, dtype=start.dtype)
    p = torch.div(steps, grid, rounding_mode="floor")
    g = steps - p * grid
    pos = start[:, None] + p[None, :] * bin_size[:, None] + (g[None, :] + 0.5) * bin_size[:, None] / grid
    valid = (pos >= -1.0) & (pos <= float(limit))
    pos = pos.clamp(min=0.0)
    low = pos.floor().long()
    at_edge = low >= limit - 1
    low = torch.where(at_edge, torch.full_like(low, limit - 1), low)
    high = torch.where(at_edge, low, low + 1)
    pos = torch.where(at_edge, low.to(pos.dtype), pos)
    frac = pos - low.to(pos.dtype)
    zero = torch.zeros_like(frac)
    return low, high, torch.where(valid, 1.0 - frac, zero), torch.where(valid, frac, zero)


def roi_align(feature: Tensor, rois: Tensor, output_size: int, spatial_scale: float, sampling_ratio: int) -> Tensor:
    """torchvision.ops.roi_align (aligned=False, sampling_ratio > 0) of R x 5 RoIs (image index, x1 y1 x2 y2) on an
    N x C x H x W map -> R x C x output x output."""
    n, c, h, w = feature.shape
    r = rois.size(0)
    if r == 0:
        return torch.zeros(0, c, output_size, output_size, dtype=feature.dtype)
    x1 = rois[:, 1] * spatial_scale
    y1 = rois[:, 2] * spatial_scale
    rw = (rois[:, 3] * spatial_scale - x1).clamp(min=1.0)
    rh = (rois[:, 4] * spatial_scale - y1).clamp(min=1.0)
    g = sampling_ratio
    ylo, yhi, wylo, wyhi = _axis_samples(y1, rh, output_size, g, h)
    xlo, xhi, wxlo, wxhi = _axis_samples(x1, rw, output_size, g, w)
    ys, wys = [ylo, yhi], [wylo, wyhi]
    xs, wxs = [xlo, xhi], [wxlo, wxhi]
    s = output_size * g
    img = rois[:, 0].long()
    out = torch.zeros(r, c, s, s, dtype=feature.dtype)
    for b in range(n):  # gathered from each image's map: no per-RoI copy of a map
        sel = torch.where(img == b)[0]
        if sel.numel() == 0:
            continue
        flat = feature[b].reshape(c, h * w)
        acc = torch.zeros(c, sel.numel(), s, s, dtype=feature.dtype)
        for i in range(2):
            for j in range(2):
                yi, xi = ys[i].index_select(0, sel), xs[j].index_select(0, sel)
                index = (yi[:, :, None] * w + xi[:, None, :]).reshape(-1)
                values = flat.index_select(1, index).reshape(c, -1, s, s)
                weight = wys[i].index_select(0, sel)[:, :, None] * wxs[j].index_select(0, sel)[:, None, :]
                acc = acc + weight[None] * values
        out[sel] = acc.permute(1, 0, 2, 3)
    return out.reshape(r, c, output_size, g, output_size, g).mean(dim=(3, 5))


class DetectorProgram(nn.Module):
    """What :func:`osteonet.export` scripts for ``part="detector"``: see the module docstring."""

    __constants__ = ["levels"]

    def __init__(self, maps: nn.Module, anchors: List[Tensor], batch_hw: Tuple[int, int], head_layers: nn.Module,
                 post: Dict[str, object], num_classes: int) -> None:
        super().__init__()
        self.maps = maps  # traced: padded batch -> maps, objectness, deltas per level
        self.box_head = head_layers  # fc6, fc7, cls_score, bbox_pred (plain Linear copies)
        self.levels = len(anchors)
        self.register_buffer("anchors", torch.cat(anchors))
        self.anchor_counts: List[int] = [int(a.size(0)) for a in anchors]
        self.batch_h, self.batch_w = int(batch_hw[0]), int(batch_hw[1])
        t, rpn, roi = post["transform"], post["rpn"], post["roi_heads"]
        self.register_buffer("image_mean", torch.tensor(t["image_mean"], dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("image_std", torch.tensor(t["image_std"], dtype=torch.float32).view(-1, 1, 1))
        ms = t["min_size"]
        self.min_size = int(ms[-1] if isinstance(ms, list) else ms)
        self.max_size = int(t["max_size"])
        self.pre_nms_top_n = int(rpn["pre_nms_top_n"])
        self.post_nms_top_n = int(rpn["post_nms_top_n"])
        self.rpn_nms_thresh = float(rpn["nms_thresh"])
        self.rpn_score_thresh = float(rpn["score_thresh"])
        self.pooled_levels = int(roi["pooled_levels"])
        self.sampling_ratio = int(roi["sampling_ratio"])
        self.output_size = int(roi["output_size"])
        self.box_score_thresh = float(roi["score_thresh"])
        self.box_nms_thresh = float(roi["nms_thresh"])
        self.detections_per_img = int(roi["detections_per_img"])
        self.num_classes = int(num_classes)
        self.clip = math.log(1000.0 / 16)

    def _resize(self, img: Tensor) -> Tensor:
        h, w = img.shape[-2], img.shape[-1]
        # float32 arithmetic as torchvision and the C++ transform
        s = torch.min(torch.tensor(float(self.min_size), dtype=torch.float32) / float(min(h, w)),
                      torch.tensor(float(self.max_size), dtype=torch.float32) / float(max(h, w)))
        sd = float(s)
        oh, ow = int(math.floor(float(h) * sd)), int(math.floor(float(w) * sd))
        return F.interpolate(img[None], size=[oh, ow], mode="bilinear", align_corners=False)[0]

    def forward(self, images: List[Tensor]) -> List[Dict[str, Tensor]]:
        originals: List[Tuple[int, int]] = []
        sizes: List[Tuple[int, int]] = []
        resized: List[Tensor] = []
        for img in images:
            if img.dim() != 3 or img.size(0) != self.image_mean.size(0):
                raise ValueError("detector: expected C x H x W images with " + str(self.image_mean.size(0)) +
                                 " channels")
            originals.append((img.shape[-2], img.shape[-1]))
            x = self._resize((img - self.image_mean) / self.image_std)
            resized.append(x)
            sizes.append((x.shape[-2], x.shape[-1]))
        ph = int(math.ceil(float(max([s[0] for s in sizes])) / 32.0) * 32)
        pw = int(math.ceil(float(max([s[1] for s in sizes])) / 32.0) * 32)
        if ph != self.batch_h or pw != self.batch_w:
            raise ValueError("detector: the images pad to " + str(ph) + "x" + str(pw) + ", this program was exported "
                             "for " + str(self.batch_h) + "x" + str(self.batch_w) + " (export it with that input_size)")
        batch = torch.zeros(len(resized), resized[0].size(0), ph, pw)
        for i, x in enumerate(resized):
            batch[i, :, :x.size(1), :x.size(2)] = x
        outs = self.maps(batch)
        maps = outs[:self.levels]
        proposals = self._proposals(outs[self.levels:2 * self.levels], outs[2 * self.levels:], sizes)
        dets = self._detections(maps, proposals, sizes)
        for i, d in enumerate(dets):
            rh = torch.tensor(float(originals[i][0]), dtype=torch.float32) / float(sizes[i][0])
            rw = torch.tensor(float(originals[i][1]), dtype=torch.float32) / float(sizes[i][1])
            d["boxes"] = d["boxes"] * torch.stack([rw, rh, rw, rh])
        return dets

    def _proposals(self, objectness: List[Tensor], deltas: List[Tensor], sizes: List[Tuple[int, int]]) -> List[Tensor]:
        n = objectness[0].size(0)
        obj: List[Tensor] = []
        reg: List[Tensor] = []
        for o, d in zip(objectness, deltas):
            a, h, w = o.size(1), o.size(2), o.size(3)
            obj.append(o.view(n, a, 1, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1))
            reg.append(d.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
        scores = torch.cat(obj, 1)
        codes = torch.cat(reg, 1).reshape(-1, 4)
        boxes = decode(codes, self.anchors.repeat(n, 1), [1.0, 1.0, 1.0, 1.0], self.clip).view(n, -1, 4)
        top: List[Tensor] = []
        lv: List[Tensor] = []
        offset = 0
        for l, count in enumerate(self.anchor_counts):
            k = min(self.pre_nms_top_n, count)
            top.append(scores.narrow(1, offset, count).topk(k, 1)[1] + offset)
            lv.append(torch.full([count], l, dtype=torch.long))
            offset += count
        top_idx = torch.cat(top, 1)
        levels = torch.cat(lv)
        out: List[Tensor] = []
        for i in range(n):
            idx = top_idx[i]
            b = clip_boxes(boxes[i].index_select(0, idx), sizes[i][0], sizes[i][1])
            s = torch.sigmoid(scores[i].index_select(0, idx))
            lvl = levels.index_select(0, idx)
            keep = remove_small(b, 1e-3)
            b, s, lvl = b.index_select(0, keep), s.index_select(0, keep), lvl.index_select(0, keep)
            keep = torch.where(s >= self.rpn_score_thresh)[0]
            b, s, lvl = b.index_select(0, keep), s.index_select(0, keep), lvl.index_select(0, keep)
            keep = batched_nms(b, s, lvl, self.rpn_nms_thresh)
            keep = keep[:self.post_nms_top_n]
            out.append(b.index_select(0, keep))
        return out

    def _pool(self, maps: List[Tensor], proposals: List[Tensor], sizes: List[Tuple[int, int]]) -> Tensor:
        feats = maps[:self.pooled_levels]
        max_h = max([s[0] for s in sizes])
        scales: List[float] = []
        for f in feats:
            approx = torch.tensor(float(f.size(-2)) / float(max_h), dtype=torch.float32)
            # float32 log2, then rounded as a tensor of its own: torch 2.x's CPU fuser (NNC) computes torch.round
            # inside a fused group as 0 (Debian's torch 2.6), so round(log2(approx)) gave every scale 1.0 from
            # the program's second call on (docs/building.md, torch 2.x)
            log2 = float(torch.log2(approx))
            scales.append(2.0 ** float(torch.round(torch.tensor(log2, dtype=torch.float32))))
        ids = [torch.full([p.size(0), 1], float(i)) for i, p in enumerate(proposals)]
        rois = torch.cat([torch.cat([ids[i], p], 1) for i, p in enumerate(proposals)], 0)
        if len(feats) == 1:
            return roi_align(feats[0], rois, self.output_size, scales[0], self.sampling_ratio)
        k_min = int(round(-math.log(scales[0]) / math.log(2.0)))  # the scales are powers of two
        k_max = int(round(-math.log(scales[-1]) / math.log(2.0)))
        boxes = torch.cat(proposals, 0)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        lv = torch.floor(4.0 + torch.log2(torch.sqrt(area) / 224.0) + 1e-6).clamp(float(k_min), float(k_max))
        lv = lv.long() - k_min
        result = torch.zeros(rois.size(0), feats[0].size(1), self.output_size, self.output_size)
        for l, f in enumerate(feats):
            idx = torch.where(lv == l)[0]
            if idx.numel() > 0:
                result[idx] = roi_align(f, rois.index_select(0, idx), self.output_size, scales[l], self.sampling_ratio)
        return result

    def _detections(self, maps: List[Tensor], proposals: List[Tensor],
                    sizes: List[Tuple[int, int]]) -> List[Dict[str, Tensor]]:
        pooled = self._pool(maps, proposals, sizes)
        logits, codes = self.box_head(pooled)
        boxes_all = decode(codes, torch.cat(proposals, 0), [10.0, 10.0, 5.0, 5.0], self.clip).view(
            codes.size(0), -1, 4)
        scores_all = torch.softmax(logits, -1)
        out: List[Dict[str, Tensor]] = []
        start = 0
        for i, p in enumerate(proposals):
            k = p.size(0)
            boxes = clip_boxes(boxes_all[start:start + k], sizes[i][0], sizes[i][1])
            scores = scores_all[start:start + k]
            start += k
            c = scores.size(1)
            labels = torch.arange(c).view(1, -1).expand_as(scores)
            boxes = boxes[:, 1:].reshape(-1, 4)
            scores = scores[:, 1:].reshape(-1)
            labels = labels[:, 1:].reshape(-1)
            keep = torch.where(scores > self.box_score_thresh)[0]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = remove_small(boxes, 1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = batched_nms(boxes, scores, labels, self.box_nms_thresh)[:self.detections_per_img]
            out.append({"boxes": boxes.index_select(0, keep), "labels": labels.index_select(0, keep),
                        "scores": scores.index_select(0, keep)})
        return out


class BoxHead(nn.Module):
    """TwoMLPHead + FastRCNNPredictor on plain Linear layers (copies of the detector's)."""

    def __init__(self, fc6: nn.Linear, fc7: nn.Linear, cls_score: nn.Linear, bbox_pred: nn.Linear) -> None:
        super().__init__()
        self.fc6, self.fc7, self.cls_score, self.bbox_pred = fc6, fc7, cls_score, bbox_pred

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        x = F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))
        return self.cls_score(x), self.bbox_pred(x)
