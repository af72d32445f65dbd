"""The GAN paper's Algorithm 1 (Goodfellow et al. 2014) on MNIST, as one plain loop over minibatches.

    python examples/minimal_gan.py --data PATH/TO/MNIST     # a folder with the four IDX files
    python examples/minimal_gan.py                          # downloads MNIST into ~/.cache/tinygan first

Only the engine, nn, optim, functional and the data loader: no trainer, no checkpoints.
About 3 minutes on one CPU core; writes minimal_gan.png, 64 digits from G.
(examples/gan_mnist.py is the full application: logs, resume, the MNIST judge.)
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import tinygan as tg  # noqa: E402
from tinygan import backend, nn, optim, functional as F  # noqa: E402
from tinygan.data import load_mnist  # noqa: E402
from tinygan.train.images import save_grid  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", metavar="PATH", help="folder with the MNIST IDX files (default: download them)")
p.add_argument("--epochs", type=int, default=5, help="passes over the 60,000 digits (default: 5)")
p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (for a quick look)")
p.add_argument("--out", default="minimal_gan.png", help="the PNG grid written at the end")
args = p.parse_args()

backend.seed(0)
images, _ = load_mnist(args.data, "train")
x_all = images.reshape(len(images), 784).astype(np.float32) / 127.5 - 1   # pixels in [-1, 1], like G's tanh
Z, m, k = 64, 64, 1   # noise size, minibatch size m, discriminator steps k per generator step (the paper's k = 1)

G = nn.Sequential(nn.Linear(Z, 256), nn.BatchNorm1d(256), nn.LeakyReLU(0.2),   # batch norm steadies G
                  nn.Linear(256, 512), nn.BatchNorm1d(512), nn.LeakyReLU(0.2), nn.Linear(512, 784), nn.Tanh())
D = nn.Sequential(nn.Linear(784, 512), nn.LeakyReLU(0.2), nn.Linear(512, 256), nn.LeakyReLU(0.2),
                  nn.Linear(256, 1))                  # a logit l: D(x) = sigmoid(l)
opt_g = optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
opt_d = optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))

step = 0
for epoch in range(args.epochs):
    order = np.random.default_rng([0, epoch]).permutation(len(x_all))
    for i in range(0, len(order) - k * m + 1, k * m):   # "for number of training iterations do"
        for j in range(k):
            # Sample m noise samples z and m examples x; update D by ascending its stochastic gradient of
            #   (1/m) sum [log D(x) + log(1 - D(G(z)))],  i.e. descend softplus(-l(x)) + softplus(l(G(z)))
            x = tg.tensor(backend.to_device(x_all[order[i + j * m:i + (j + 1) * m]]))
            fake = G(tg.tensor(backend.randn(m, Z))).detach()        # G is held fixed in D's step
            loss_d = F.softplus(-D(x)).mean() + F.softplus(D(fake)).mean()
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        # Sample m noise samples z; update G. The paper's advice: instead of descending log(1 - D(G(z))),
        # ascend log D(G(z)) (the non-saturating loss): the same fixed point, strong gradients early on.
        loss_g = F.softplus(-D(G(tg.tensor(backend.randn(m, Z))))).mean()
        opt_g.zero_grad()   # clears G only: D's gradients from this loss are cleared before D's next step
        loss_g.backward()
        opt_g.step()
        step += 1
        if step == args.max_steps:
            break
    print(f"epoch {epoch + 1}: step {step}, loss_D {float(backend.to_host(loss_d.data)):.3f}, "
          f"loss_G {float(backend.to_host(loss_g.data)):.3f}")
    if step == args.max_steps:
        break

with tg.no_grad(), nn.evaluating(G):   # batch norm with its running statistics, as for any sampling
    digits = G(tg.tensor(backend.randn(64, Z))).data
save_grid(args.out, backend.to_host(digits).reshape(64, 1, 28, 28) / 2 + 0.5, nrow=8, scale=2)
print(f"wrote {args.out}")
