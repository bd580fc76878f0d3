import time, jax, numpy as np, sys
from gcnjax import coop, data as gdata
imgs, _ = gdata.load_fashion_mnist(limit=500)
cfg = coop.coop_config(28, 1, n_iterations=int(sys.argv[1]))
import dataclasses
cfg = dataclasses.replace(cfg, descriptor=dataclasses.replace(cfg.descriptor, n_chains=36, batch_size=36))
t=time.time()
r = coop.learn_coop(cfg, imgs, "/tmp/coop_smoke", overwrite=True, quiet=True)
print(time.time()-t)
h = r["history"]
for k in ("iteration","seconds","energy_data","energy_proposals","energy_revised","revision_drop","gen_mse", "f_data", "f_revised"):
    print(k, np.round(h[k][:8], 3))
