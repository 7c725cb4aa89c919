"""Independent pure-PyTorch references of osteonet's attention modules and their placements, written
from the papers (SENet, ECA-Net, SKNet, DSNet §2.3) and osteonet's documented choices. The tests load
an osteonet model's state dict into these and compare outputs; nothing here calls osteonet."""

import math
import types

import torch
import torch.nn.functional as F
from torch import nn


class SE(nn.Module):
    def __init__(self, c, reduction=16, min_channels=8):
        super().__init__()
        hidden = max(c // reduction, min_channels)
        self.fc1 = nn.Conv2d(c, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class ECA(nn.Module):
    def __init__(self, c, gamma=2, beta=1):
        super().__init__()
        t = int(abs((math.log2(c) + beta) / gamma))
        k = t if t % 2 else t + 1
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x):
        y = self.conv(x.mean((2, 3)).unsqueeze(1))
        return x * torch.sigmoid(y).view(x.shape[0], x.shape[1], 1, 1)


class SK(nn.Module):
    """SKNet: paths 3x3 dil 1 and 3x3 dil 2, G=32 (gcd with C), d=max(C/16, 32), softmax over paths."""

    def __init__(self, cin, cout, stride=1, groups=32, reduction=16, L=32):
        super().__init__()
        g = math.gcd(math.gcd(cin, cout), groups)
        self.paths = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, cout, 3, stride, d, d, groups=g, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
            for d in (1, 2))
        d = max(cout // reduction, L)
        self.fc_reduce = nn.Conv2d(cout, d, 1, bias=False)
        self.bn = nn.BatchNorm2d(d)
        self.fc_select = nn.Conv2d(d, cout * 2, 1, bias=False)
        self.cout = cout

    def forward(self, x):
        feats = torch.stack([p(x) for p in self.paths], 1)
        s = feats.sum(1).mean((2, 3), keepdim=True)
        a = self.fc_select(F.relu(self.bn(self.fc_reduce(s))))
        a = a.view(x.shape[0], 2, self.cout, 1, 1).softmax(1)
        return (feats * a).sum(1)


class DS(nn.Module):
    """DSNet §2.3 with osteonet's defaults: branches k=3, 5 (grouped conv+BN+ReLU), one FC per branch
    (Eq. 2) with sigmoid, weighted sum, 3x3 dilation-2 fusion + BN, residual."""

    def __init__(self, c, groups=32):
        super().__init__()
        g = math.gcd(c, groups)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, c, k, 1, k // 2, groups=g, bias=False), nn.BatchNorm2d(c), nn.ReLU()) for k in (3, 5))
        self.fcs = nn.ModuleList(nn.Linear(c, c) for _ in range(2))
        self.fuse = nn.Sequential(nn.Conv2d(c, c, 3, 1, 2, dilation=2, groups=g, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        s = 0
        for branch, fc in zip(self.branches, self.fcs):
            u = branch(x)
            w = torch.sigmoid(fc(u.mean((2, 3))))
            s = s + u * w[:, :, None, None]
        return x + self.fuse(s)


POST = {"se": SE, "eca": ECA, "ds": DS}


def _bottleneck_forward(self, x):
    identity = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    if hasattr(self, "attn"):
        out = self.attn(out)
    if self.downsample is not None:
        identity = self.downsample(x)
    return self.relu(out + identity)


def _basic_forward(self, x):
    identity = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    if hasattr(self, "attn"):
        out = self.attn(out)
    if self.downsample is not None:
        identity = self.downsample(x)
    return self.relu(out + identity)


def resnet_with_block_attention(tv_resnet: nn.Module, kind: str) -> nn.Module:
    """timm's slots: SE/ECA/DS after the block's last norm; SK replaces the (strided) 3x3 conv."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    for m in tv_resnet.modules():
        if isinstance(m, Bottleneck):
            if kind == "sk":
                m.conv2 = SK(m.conv2.in_channels, m.conv2.out_channels, m.conv2.stride[0])
                m.bn2 = nn.Identity()
            else:
                m.attn = POST[kind](m.bn3.num_features)
            m.forward = types.MethodType(_bottleneck_forward, m)
        elif isinstance(m, BasicBlock):
            if kind == "sk":
                m.conv1 = SK(m.conv1.in_channels, m.conv1.out_channels, m.conv1.stride[0])
                m.bn1 = nn.Identity()
            else:
                m.attn = POST[kind](m.bn2.num_features)
            m.forward = types.MethodType(_basic_forward, m)
    return tv_resnet


def with_stage_attention(tv_model: nn.Module, family: str, kind: str) -> nn.Module:
    """DSNet's placement: `attn_stem` after the stem stage, `attn_last` after the last feature stage."""
    m = tv_model
    if family == "resnet":
        m.attn_stem, m.attn_last = POST[kind](64), POST[kind](m.fc.in_features)

        def forward(self, x):
            x = self.attn_stem(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
            x = self.attn_last(self.layer4(self.layer3(self.layer2(self.layer1(x)))))
            return self.fc(torch.flatten(self.avgpool(x), 1))
    elif family == "vgg":
        pools = [i for i, l in enumerate(m.features) if isinstance(l, nn.MaxPool2d)]
        m.attn_stem, m.attn_last = POST[kind](64), POST[kind](512)

        def forward(self, x):
            for i, layer in enumerate(self.features):
                if i == pools[-1]:
                    x = self.attn_last(x)
                x = layer(x)
                if i == pools[0]:
                    x = self.attn_stem(x)
            return self.classifier(torch.flatten(self.avgpool(x), 1))
    elif family == "mobilenet":
        last = len(m.features) - 1
        m.attn_stem, m.attn_last = POST[kind](16), POST[kind](m.features[last].out_channels)

        def forward(self, x):
            for i, layer in enumerate(self.features):
                x = layer(x)
                if i == 1:
                    x = self.attn_stem(x)
                if i == last:
                    x = self.attn_last(x)
            x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
            return self.classifier(x)
    elif family == "densenet":
        m.attn_stem, m.attn_last = POST[kind](64), POST[kind](m.classifier.in_features)

        def forward(self, x):
            for i, layer in enumerate(self.features):
                x = layer(x)
                if i == 3:
                    x = self.attn_stem(x)
            x = self.attn_last(F.relu(x))
            return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
    elif family == "inception":
        m.attn_stem, m.attn_last = POST[kind](64), POST[kind](2048)

        def forward(self, x):
            x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
            x = self.attn_stem(self.maxpool1(x))
            x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
            for n in ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                      "Mixed_7a", "Mixed_7b", "Mixed_7c"]:
                x = getattr(self, n)(x)
            x = self.attn_last(x)
            return self.fc(torch.flatten(self.avgpool(x), 1))
    else:
        raise ValueError(family)
    m.forward = types.MethodType(forward, m)
    return m


class DxaCnn21(nn.Module):
    """dxa_cnn21 as documented in include/osteonet/backbones/dxa_cnn.hpp."""

    def __init__(self, num_classes=2, in_chans=1, widths=(32, 64, 128, 256)):
        super().__init__()
        layers, c = [], in_chans
        for i, w in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2, 2))
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            c = w
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(c, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))
