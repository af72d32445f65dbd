"""BEGAN (Berthelot, Schumm, Metz 2017) on 32x32 faces, as one plain loop: the update with k_t and M_global.

    python examples/minimal_began.py --data PATH/TO/FACES    # a folder (or .tgz/.zip) of face photos, e.g. LFW
    python examples/minimal_began.py                         # downloads LFW into ~/.cache/tinygan first

Only the engine, nn, optim, functional and the data loader: no trainer, no checkpoints.
About 4.5 minutes on one CPU core (1,000 steps); writes minimal_began.png, 64 faces from G.
(examples/began_faces.py is the full application: 64x64, logs, resume, metrics.)
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import tinygan as tg  # noqa: E402
from tinygan import backend, nn, optim  # noqa: E402
from tinygan.data import load_faces  # noqa: E402
from tinygan.train.images import save_grid  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", metavar="PATH", help="face photos: a folder, .tgz or .zip (default: download LFW)")
p.add_argument("--steps", type=int, default=1000, help="training steps of batch 16 (default: 1000)")
p.add_argument("--out", default="minimal_began.png", help="the PNG grid written at the end")
args = p.parse_args()
n, h, m, gamma, lambda_k = 16, 32, 16, 0.5, 0.001   # filters, code size, batch, diversity ratio, k's rate


def convs(a, b):   # two 3x3 convs with ELU: the unit of every scale
    return [nn.Conv2d(a, b, 3, padding=1), nn.ELU(), nn.Conv2d(b, b, 3, padding=1), nn.ELU()]


class Decoder(nn.Module):   # h -> 8x8xn -> 16x16 -> 32x32 RGB: G, and the second half of D
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(h, 8 * 8 * n)
        self.net = nn.Sequential(*convs(n, n), nn.Upsample(scale_factor=2), *convs(n, n),
                                 nn.Upsample(scale_factor=2), *convs(n, n), nn.Conv2d(n, 3, 3, padding=1))

    def forward(self, z):
        return self.net(self.fc(z).reshape(z.shape[0], n, 8, 8))


class AutoEncoder(nn.Module):   # D: filters n, 2n, 3n, downsampling by stride-2 convs, to an h-dim code and back
    def __init__(self):
        super().__init__()
        self.encode = nn.Sequential(nn.Conv2d(3, n, 3, padding=1), nn.ELU(), *convs(n, n),
                                    nn.Conv2d(n, 2 * n, 3, stride=2, padding=1), nn.ELU(), *convs(2 * n, 2 * n),
                                    nn.Conv2d(2 * n, 3 * n, 3, stride=2, padding=1), nn.ELU(), *convs(3 * n, 3 * n))
        self.fc, self.decode = nn.Linear(8 * 8 * 3 * n, h), Decoder()

    def forward(self, x):
        return self.decode(self.fc(self.encode(x).flatten(1)))


backend.seed(0)
faces = load_faces(args.data, size=32)                       # uint8 (N, 3, 32, 32), grayscale photos left out
G, D = Decoder(), AutoEncoder()
opt_g = optim.Adam(G.parameters(), lr=3e-4, betas=(0.5, 0.999))
opt_d = optim.Adam(D.parameters(), lr=3e-4, betas=(0.5, 0.999))


def L(v):   # the autoencoder's pixel-wise L1 loss: L(v) = mean |v - D(v)|
    return (v - D(v)).abs().mean()


def noise():   # z uniform in [-1, 1]^h
    return tg.tensor(backend.uniform(-1, 1, (m, h)))


k, rng = 0.0, np.random.default_rng(0)   # k_0 = 0
for step in range(1, args.steps + 1):
    x = tg.tensor(backend.to_device(faces[rng.integers(0, len(faces), m)]).astype("float32") / 127.5 - 1)
    # L_D = L(x) - k_t L(G(z_D)): D reconstructs real faces well and generated ones badly
    loss_real, loss_fake_d = L(x), L(G(noise()).detach())
    opt_d.zero_grad()
    (loss_real - k * loss_fake_d).backward()
    opt_d.step()
    # L_G = L(G(z_G)): G makes faces that D reconstructs well
    loss_g = L(G(noise()))
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    # k_t+1 = clip(k_t + lambda_k (gamma L(x) - L(G(z_G))), 0, 1) keeps E[L(G(z))] = gamma E[L(x)]
    # (read on the host every step for clarity; the library's BEGANTrainer keeps k on the device)
    lx, lg = float(backend.to_host(loss_real.data)), float(backend.to_host(loss_g.data))
    k = min(max(k + lambda_k * (gamma * lx - lg), 0.0), 1.0)
    if step % 100 == 0:   # M_global = L(x) + |gamma L(x) - L(G(z_G))| falls as the faces improve
        print(f"step {step}: M_global {lx + abs(gamma * lx - lg):.4f}, k {k:.4f}")

with tg.no_grad():
    images = G(tg.tensor(backend.uniform(-1, 1, (64, h)))).data
save_grid(args.out, np.clip(backend.to_host(images) / 2 + 0.5, 0, 1), nrow=8, scale=2)
print(f"wrote {args.out}")
