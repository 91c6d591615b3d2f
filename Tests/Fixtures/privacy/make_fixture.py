"""Makes the reference numbers Finch's RDP accountant is held to: Opacus' own RDP accountant on a grid of settings.

    pip install opacus==1.6.0
    python3 make_fixture.py

reference.json:
- `epsilon`: for each (q, sigma, steps, delta) of the grid, Opacus' RDPAccountant ε after `steps` steps at sampling
  rate q and noise multiplier sigma (its default orders), and the order it chose;
- `rdp`: compute_rdp(q, sigma, 1 step, order) at integer and fractional orders;
- `history`: an accountant that saw two settings one after the other (as a resumed run with a changed batch would);
- `noise`: get_noise_multiplier(target_epsilon, target_delta, sample_rate, steps) for ε of 1, 3 and 8.
"""
import json
import warnings

from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp
from opacus.accountants.utils import get_noise_multiplier

warnings.simplefilter("ignore")
grid = []
for q in [0.001, 0.01, 0.05, 0.3]:
    for sigma in [0.5, 0.8, 1.0, 2.0, 5.0]:
        for steps in [1, 100, 10_000]:
            for delta in [1e-5, 1e-6]:
                accountant = RDPAccountant()
                accountant.history = [(sigma, q, steps)]
                eps, order = accountant.get_privacy_spent(delta=delta)
                grid.append({"q": q, "sigma": sigma, "steps": steps, "delta": delta, "epsilon": float(eps), "order": float(order)})
rdp = []
for q, sigma in [(0.01, 1.0), (0.05, 0.7), (0.3, 2.0), (0.001, 0.6)]:
    for order in [1.1, 1.5, 2.0, 2.5, 3.7, 8.0, 10.9, 32.0, 63.0]:
        rdp.append({"q": q, "sigma": sigma, "order": order, "rdp": float(compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=order))})
accountant = RDPAccountant()
accountant.history = [(1.1, 0.01, 300), (0.9, 0.02, 200)]
eps, order = accountant.get_privacy_spent(delta=1e-5)
history = {"segments": [{"sampleRate": 0.01, "noiseMultiplier": 1.1, "steps": 300},
                        {"sampleRate": 0.02, "noiseMultiplier": 0.9, "steps": 200}],
           "delta": 1e-5, "epsilon": float(eps), "order": float(order)}
noise = []
for target in [1.0, 3.0, 8.0]:
    for q, steps in [(0.01, 1000), (0.004, 500), (0.05, 200)]:
        sigma = get_noise_multiplier(target_epsilon=target, target_delta=1e-5, sample_rate=q, steps=steps)
        noise.append({"epsilon": target, "delta": 1e-5, "q": q, "steps": steps, "sigma": float(sigma)})
json.dump({"opacus": "1.6.0", "epsilon": grid, "rdp": rdp, "history": history, "noise": noise}, open("reference.json", "w"), indent=1)
print(len(grid), "settings; history epsilon", eps)
