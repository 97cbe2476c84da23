"""The same two-stream model and losses in PyTorch, as a speed reference (benchmark only).

ResNet-18 trunks as in torchvision (BasicBlock, [2, 2, 2, 2], no classifier), the audio
stem on one channel, frames folded into the batch and pooled over time and space, ONE
linear layer on the concatenated features split into the unimodal logits (eq. 3), the
warm-up and adaptive losses of the paper (eq. 7 and 10), SGD with momentum and weight decay. Written the
way the public reference code of this benchmark is, so the comparison is what a
researcher would otherwise run.
"""

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class Trunk(nn.Module):
    def __init__(self, in_channels: int, width: int = 64,
                 stage_sizes: Sequence[int] = (2, 2, 2, 2)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], width
        for stage, n in enumerate(stage_sizes):
            cout = width * 2**stage
            for b in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and b == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.out_features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.blocks(self.stem(x))


class AVClassifier(nn.Module):
    def __init__(self, num_classes: int, width: int = 64,
                 stage_sizes: Sequence[int] = (2, 2, 2, 2)):
        super().__init__()
        self.audio = Trunk(1, width, stage_sizes)
        self.visual = Trunk(3, width, stage_sizes)
        self.fc = nn.Linear(2 * self.audio.out_features, num_classes)

    def forward(self, audio, frames):
        # audio [B, 1, F, T]; frames [B, 3, Tv, H, W] (the reference code's layout)
        phi_a = self.audio(audio).mean(dim=(2, 3))
        b, c, tv, h, w = frames.shape
        fmap = self.visual(frames.permute(0, 2, 1, 3, 4).reshape(b * tv, c, h, w))
        _, c2, h2, w2 = fmap.shape
        phi_v = fmap.reshape(b, tv, c2, h2, w2).mean(dim=(1, 3, 4))
        d = phi_a.shape[1]
        l_a = phi_a @ self.fc.weight[:, :d].T + self.fc.bias / 2
        l_v = phi_v @ self.fc.weight[:, d:].T + self.fc.bias / 2
        return l_a + l_v, l_a, l_v


def warmup_loss(f, l_a, l_v, y):
    return F.cross_entropy(f, y) + F.cross_entropy(l_a, y) + F.cross_entropy(l_v, y)


def adaptive_loss(f, l_a, l_v, y, gmm, alpha=1.0, beta=1.0, gamma=1.0, lambda_t=1.0):
    """eq. 10 with posteriors of the current gaps under `gmm` = (weights, means, vars)."""
    weights, means, variances = gmm
    ce = F.cross_entropy(f, y, reduction="none")
    gap = (F.softmax(l_a, 1).gather(1, y[:, None]) - F.softmax(l_v, 1).gather(1, y[:, None]))[:, 0]
    with torch.no_grad():
        g = gap.detach()[:, None]
        logp = (torch.log(weights) - 0.5 * (math.log(2 * math.pi) + torch.log(variances))
                - 0.5 * (g - means) ** 2 / variances)
        post = torch.softmax(logp, dim=1)
    per = alpha * post[:, 0] * ce + lambda_t * (beta * gap**2
                                                + gamma * post[:, 1] * (gap - means[0]) ** 2)
    return per.mean()


def make_step(model, loss_name: str, lr: float = 2e-3):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    device = next(model.parameters()).device  # the GMM must live where the gaps do
    gmm = tuple(torch.tensor(v, device=device)
                for v in ([0.85, 0.15], [0.0, 0.5], [0.01, 0.04]))

    def step(audio, frames, y):
        opt.zero_grad(set_to_none=True)
        f, l_a, l_v = model(audio, frames)
        loss = warmup_loss(f, l_a, l_v, y) if loss_name == "warmup" else adaptive_loss(
            f, l_a, l_v, y, gmm)
        loss.backward()
        opt.step()
        return loss

    return step
