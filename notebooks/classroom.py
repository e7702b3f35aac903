# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Federated learning that sends a seed and masks, not weights
#
# In **federated learning** many devices (here: 20 simulated *clients*) train one model together
# without sharing their data. Each round, a server sends the current model to some clients, they
# train it on their own data and send back an update, and the server combines the updates.
# The usual method, **FedAvg**, sends every weight as a 32-bit number, both ways, every round:
# the network is the bottleneck.
#
# **PEMN** (Parameter-Efficient Masking Networks) shows a different idea: start from a network of
# *fixed random numbers* that everyone can regenerate from one shared **seed**, and learn only
# which of those weights to keep, a **mask** of 0s and 1s. A mask costs 1 bit per weight instead
# of 32. This notebook runs that idea as a federated protocol and counts every byte it sends.
#
# Run the cells from top to bottom (Shift+Enter). Nothing here needs a GPU or the internet.

# %%
import json
from pathlib import Path

import pandas as pd
from IPython.display import Image, display

from pemn_fl.describe import anatomy, table
from pemn_fl.prototype import PrototypeSpec

RUNS = Path("runs")  # every run of this notebook writes its files here

# %% [markdown]
# ## 1. What does the model hold?
#
# `describe` builds the model the clients train (a small multilayer perceptron for 8x8 images of
# handwritten digits) over a random **prototype**. It prints how many weights the model has, how
# many random numbers really had to be generated, and how small one mask is. The
# **fingerprint** is a short hash of the random weights: two machines with the same fingerprint
# hold the very same network, so a mask means the same thing on both.

# %%
spec = PrototypeSpec(seed=0, strategy="dense", init="signed-constant", rescale=True)
print(table(anatomy("mlp", "digits", spec), spec))

# %% [markdown]
# ## 2. A federated run: 20 clients, each with its own slice of the digits
#
# This is the classroom default, `python -m simulations.run --clients 20`. Flower's Simulation
# Engine starts the clients; every round, all of them train. Two methods run on the same
# clients, data and rounds: **evolve** (the masks method: the seed plus every round's votes,
# the project's default because it reaches FedAvg's accuracy on every seed we tried) and
# **FedAvg** (dense weights, the usual baseline). The progress bar shows each
# round's test accuracy and the megabytes sent so far. It takes about a minute.

# %%
from simulations.run import main as run

assert run(["--clients", "20", "--out", str(RUNS / "default"), "--overwrite"]) == 0

# %% [markdown]
# ## 3. Bandwidth against accuracy
#
# Each curve is one method: test accuracy (up is better) against the megabytes sent so far,
# both directions, on a log scale (left is cheaper). The dashed line is the **target**: FedAvg's
# best accuracy minus one point. Where a curve crosses the line is how many bytes that method
# needed to get there.

# %%
display(Image(filename=str(RUNS / "default" / "bandwidth_accuracy.png")))

# %% [markdown]
# ## 4. The summary table
#
# One row per method: its final and best accuracy, the bytes it sent up (clients to server),
# down (server to clients) and in total, and the bytes it needed to reach the target. The last
# column says how many times fewer bytes than FedAvg that was. The bytes are those on the
# *wire*: the HTTP requests a real Flower deployment would make for every message (headers
# included), not just the masks or weights inside.

# %%
summary = json.loads((RUNS / "default" / "summary.json").read_text())
columns = ["final_accuracy", "best_accuracy", "uplink_wire_bytes", "downlink_wire_bytes",
           "total_bytes", "bytes_to_target", "fewer_bytes_than_fedavg_to_target"]
frame = pd.DataFrame({m: {c: v.get(c) for c in columns} for m, v in summary["methods"].items()}).T
frame

# %% [markdown]
# ## 5. A model is a seed and masks: export it, reload it
#
# The run saved each method's final model. `export` writes one as a small file: the settings
# that rebuild the random network from its seed, plus the masks. Compare its size with the
# same network stored the usual way, as 32-bit floats. Then `evaluate` rebuilds the network
# from the file alone and measures it on the test set: the same accuracy as the run's last
# round.

# %%
from pemn_fl.__main__ import main as pemn_fl

assert pemn_fl(["export", str(RUNS / "default"), "--out", str(RUNS / "model.pemn")]) == 0
assert pemn_fl(["evaluate", str(RUNS / "model.pemn")]) == 0

# %% [markdown]
# ## 6. What if your clients were on 3G, a satellite or NB-IoT?
#
# Nobody waits for bytes: people wait for *time*, and phones pay in *battery*. The run
# recorded every HTTP call each client made, so the same run can be replayed on other links
# without training again. Each link below comes from a published measurement (see
# `docs/time-and-energy.md`): uplinks slower than downlinks, a round trip per call, Flower's
# own polling, and the slowest client ending each round. Watch how the bytes advantage
# shrinks where round trips, not bytes, take the time.

# %%
from pemn_fl import clientlog, profiles, timesummary, timing
from pemn_fl.report import fedavg_target

rounds = pd.read_csv(RUNS / "default" / "rounds.csv")
calls = clientlog.read(RUNS / "default" / "clients.csv")
who = {}
for link in ["fibre", "lte", "3g", "geo", "nbiot"]:
    clients = profiles.population(link, "phone", list(range(20)), seed=0)
    timed = timing.replay(rounds, calls, clients.links, clients.devices,
                          profiles.server_device("laptop"), deadline=3600)
    per_method = timesummary.summarize_time(timed, fedavg_target(timed))
    who[profiles.display(link)] = {method: timesummary.duration(m["time_to_target_s"])
                                   for method, m in per_method.items()}
pd.DataFrame(who).T  # time to reach the target on each link

# %% [markdown]
# ## 7. What if every client only has two kinds of digit?
#
# Real devices rarely hold a fair sample of everything. Here each client only gets images of
# **two** digit classes (a *pathological* split), so every update pulls the model towards its
# own two classes. Watch how both methods slow down, and whether the masks keep their
# bandwidth advantage. Try changing `--classes-per-client`, `--fraction` (the share of clients
# per round) or `--rounds` and run the cell again.

# %%
assert run(["--clients", "20", "--partition", "pathological", "--classes-per-client", "2",
            "--out", str(RUNS / "two-classes"), "--overwrite"]) == 0
display(Image(filename=str(RUNS / "two-classes" / "bandwidth_accuracy.png")))

# %% [markdown]
# ## Where next
#
# * `python -m simulations.run --help` lists every option; `--methods all` runs every method
#   the project knows (FedPM, signSGD, QSGD, top-k and more) on the same meter.
# * `results/` holds the committed reference runs (Fashion-MNIST included), each with the
#   command that made it.
